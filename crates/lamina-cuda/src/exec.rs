//! `CudaExecutable`: a plan compiled into device launches over one arena, and the run that replays
//! them (as a CUDA graph captured on the first run, or launch by launch).
//!
//! Compilation mirrors lamina-cpu's: every node root gets a slot (a device address): arena,
//! constant, fixed input buffer, state buffer (bound per run) or a snapshot of a state buffer that
//! a reader needs after its Assign. Each step becomes launches with their shapes, strides and
//! constants resolved; all fused groups of a plan are generated into one NVRTC module.

// The gradient kinds of Conv, in their own file (a child module, so it shares the builder's
// internals).
#[path = "conv_grad.rs"]
mod conv_grad;
// Segments and multi-tensor launches: runs of built launches merged into one kernel.
#[path = "segment.rs"]
mod segment;
// The forward kind of Conv, the shared column buffers and the split sums of bias gradients.
#[path = "conv.rs"]
mod conv;
// Dense layers as one cuBLASLt GEMM with a bias (+ ReLU) epilogue.
#[path = "lt.rs"]
mod lt;

use crate::codegen::{self, FusedText, Load};
use crate::dev::{capturing, ctx, cuda_err, not_capturing, Dev, DevMem};
use crate::feed::Feeder;
use crate::CudaBuffer;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaEvent, CudaFunction, CudaGraph, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use lamina_core::{
    check_state, numel, strides, DType, Error, Feed, HostTensor, Literal, NodeId, Op,
    PendingOutputs, Plan, Result, StateMap, Step, Storage,
};
use std::collections::HashMap;
use std::sync::Arc;

const MAX_RANK: usize = 8;
const BLOCK: u32 = 256;
/// Largest im2col buffer; bigger convolutions run the direct kernel.
const MAX_COLUMNS: usize = 1 << 30;

/// A strided walk as the kernels take it (`struct Walk` in kernels.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk {
    rank: i64,
    shape: [i64; MAX_RANK],
    stride: [i64; MAX_RANK],
    offset: i64,
}

// SAFETY: plain old data with the layout of the C struct.
unsafe impl DeviceRepr for Walk {}

impl Walk {
    /// Flat index over `shape` → `offset + Σ idx·stride`; axes of size 1 are dropped.
    fn new(shape: &[usize], stride: &[usize], offset: usize) -> Result<Walk> {
        let dims: Vec<(usize, usize)> = shape
            .iter()
            .zip(stride)
            .filter(|(&s, _)| s != 1)
            .map(|(&s, &t)| (s, t))
            .collect();
        // merge an axis into the next inner one when they are contiguous
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, t) in dims {
            match merged.last_mut() {
                Some(last) if last.1 == t * s => *last = (last.0 * s, t),
                _ => merged.push((s, t)),
            }
        }
        if merged.len() > MAX_RANK {
            return Err(cuda_err(format!(
                "a strided access over shape {shape:?} needs {} axes; the kernels take {MAX_RANK}",
                merged.len()
            )));
        }
        let mut w = Walk {
            rank: merged.len() as i64,
            shape: [1; MAX_RANK],
            stride: [0; MAX_RANK],
            offset: offset as i64,
        };
        for (d, (s, t)) in merged.into_iter().enumerate() {
            w.shape[d] = s as i64;
            w.stride[d] = t as i64;
        }
        Ok(w)
    }
}

/// Convolution parameters (`struct ConvP` in kernels.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvP {
    v: [i64; 17],
}

// SAFETY: plain old data with the layout of the C struct (17 × i64).
unsafe impl DeviceRepr for ConvP {}

/// A kernel argument, with slots resolved to addresses at launch.
#[derive(Clone, Debug)]
enum Arg {
    Slot(usize),
    I64(i64),
    U32(u32),
    F64(f64),
    Walk(Walk),
    Conv(ConvP),
}

#[derive(Clone, Debug)]
enum Func {
    Generic(String),
    Fused(usize),
    /// A kernel generated into the plan's module with its shapes as constants.
    Planned(String),
    /// A segment or multi-tensor kernel (`segment.rs`), in a module of its own, with the bytes
    /// of dynamic shared memory it holds its local values in.
    Merged(String, u32),
}

#[derive(Clone, Debug)]
enum Kernel {
    Launch {
        func: Func,
        f: Option<CudaFunction>,
        grid: u32,
        block: u32,
        args: Vec<Arg>,
    },
    /// Row-major batched `out[i] = a[i] · b[i]`, `[m,k] x [k,n]`; an operand flagged transposed
    /// is stored as its transpose (`[k,m]`, `[n,k]`), batch strides are in elements.
    Gemm(Gemm),
    /// A cuBLASLt GEMM with a bias (+ ReLU) epilogue (`lt.rs`).
    Lt(Arc<lt::LtGemm>),
    /// Device-to-device copy (Assign, snapshot, a reshape that copies).
    Copy {
        src: usize,
        dst: usize,
        bytes: usize,
    },
}

#[derive(Clone, Debug)]
struct Gemm {
    f64: bool,
    a: usize,
    b: usize,
    out: usize,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    ta: bool,
    tb: bool,
    stride_a: usize,
    stride_b: usize,
}

fn sfx(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I32 => "i32",
        DType::Bool => "u8",
        // rejected when the plan is compiled (`Builder::new`)
        DType::F16 | DType::BF16 => "unsupported",
    }
}

fn grid_for(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).min(1 << 20) as u32
}

fn elementwise(name: String, n: usize, args: Vec<Arg>) -> Kernel {
    Kernel::Launch {
        func: Func::Generic(name),
        f: None,
        grid: grid_for(n),
        block: BLOCK,
        args,
    }
}

fn shape_text(s: &[usize]) -> String {
    lamina_core::dtype::fmt_shape(s)
}

fn broadcast_strides(shape: &[usize], target: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    st.iter()
        .zip(shape.iter().zip(target))
        .map(|(&s, (&a, &b))| if a == 1 && b != 1 { 0 } else { s })
        .collect()
}

/// A plan compiled for one CUDA device.
pub struct CudaExecutable {
    dev: Arc<Dev>,
    plan: Plan,
    _arena: DevMem,
    _consts: Vec<DevMem>,
    _snapshots: Vec<DevMem>,
    _scratch: Vec<DevMem>,
    /// Inputs in through page-locked staging into two turns of device buffers, outputs out
    /// (`feed.rs`).
    feed: Feeder,
    slots: Vec<u64>,
    bind_states: Vec<(usize, String)>,
    kernels: Vec<Kernel>,
    /// Slot of each graph output.
    outputs: Vec<usize>,
    use_graph: bool,
    /// `LAMINA_CUDA_PROFILE` was set when compiling.
    profile: bool,
    runs: usize,
    /// Host time of runs 20-119 of a profiled executable, per phase of `submit` (µs, summed).
    host_phases: [f64; 5],
    /// Per launch: `Some((fork, join))` when it runs on the side stream beside the next one.
    forks: Vec<Option<(CudaEvent, CudaEvent)>>,
    /// The slot each output is stored through into the turn's mapped buffer (`None`: copied
    /// back after the step).
    out_slots: Vec<Option<usize>>,
    /// `LAMINA_CUDA_PROFILE`: events around the replays of runs 20-119.
    replays: Vec<(CudaEvent, CudaEvent)>,
    /// The captured step of each input turn and the state addresses it was captured with.
    graphs: [Option<(CudaGraph, Vec<u64>)>; 2],
    /// The plan's generated modules.
    modules: Vec<Arc<cudarc::driver::CudaModule>>,
    /// Per launch of a generated kernel: its module (index into `modules`), name and bytes of
    /// dynamic shared memory.
    module_of: Vec<Option<(usize, String, u32)>>,
    /// Modules that are quick builds: (index, source hash, the optimised build on its way).
    upgrades: Vec<(usize, u64, Arc<crate::dev::Upgrade>)>,
}

// SAFETY: the executable's handles (graph, functions) are only used with its device's context
// bound, by one run at a time (`&mut self`).
unsafe impl Send for CudaExecutable {}

impl std::fmt::Debug for CudaExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutable")
            .field("kernels", &self.kernels.len())
            .field("arena_bytes", &self.plan.arena_bytes)
            .finish()
    }
}

impl CudaExecutable {
    /// The plan this executable runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Device operations per run (kernel launches, GEMMs and copies).
    pub fn kernel_count(&self) -> usize {
        self.kernels.len()
    }

    /// GEMMs that run on the side stream beside the next launch.
    pub fn side_gemms(&self) -> usize {
        self.forks.iter().filter(|f| f.is_some()).count()
    }

    /// Dense layers that run as one cuBLASLt GEMM with a bias (+ ReLU) epilogue (`lt.rs`).
    pub fn epilogue_gemms(&self) -> usize {
        self.kernels
            .iter()
            .filter(|k| matches!(k, Kernel::Lt(_)))
            .count()
    }

    /// True once the step has been captured as a CUDA graph that later runs replay.
    pub fn is_captured(&self) -> bool {
        self.graphs.iter().any(Option::is_some)
    }

    pub(crate) fn compile(
        dev: &Arc<Dev>,
        plan: &Plan,
        use_graph: bool,
        quick_start: bool,
    ) -> Result<CudaExecutable> {
        let t = std::time::Instant::now();
        lamina_core::passes::verify(&plan.graph)?;
        let mut b = Builder::new(dev, plan)?;
        b.find_through();
        b.plan_epilogues()?;
        let mut per_step: Vec<Vec<Kernel>> = Vec::with_capacity(plan.steps.len());
        for (t, step) in plan.steps.iter().enumerate() {
            if let Some(ks) = b.epilogue_step(t)? {
                per_step.push(ks);
                continue;
            }
            let ks = match step {
                Step::Fused { nodes, outputs } => b.fused(nodes, outputs)?,
                Step::Node(id) => b.node(*id, t)?,
            };
            per_step.push(ks);
        }
        let mut outputs = Vec::with_capacity(plan.graph.outputs.len());
        let mut out_types = Vec::with_capacity(plan.graph.outputs.len());
        for &o in &plan.graph.outputs {
            let ty = &plan.graph.nodes[o].ty;
            outputs.push(b.read(o)?);
            out_types.push((ty.dtype, ty.shape.clone()));
        }
        // Small outputs: the step stores them into the turn's mapped page-locked buffer itself, each
        // right after the step that computes it (so the store joins that step's segment).
        let (out_at, out_total) = crate::feed::out_layout(&out_types);
        let mapped = out_total > 0 && out_total <= crate::feed::MAPPED_MAX;
        let mut out_slots = vec![None; outputs.len()];
        if mapped {
            let step_of = plan.step_of_nodes();
            let mut tail = Vec::new();
            for (k, &o) in plan.graph.outputs.iter().enumerate() {
                let bytes = out_at[k].1;
                if bytes == 0 {
                    continue;
                }
                let slot = b.slots.len();
                b.slots.push(0);
                b.mapped_out
                    .insert(slot, (out_types[k].0, numel(&out_types[k].1)));
                let copy = Kernel::Copy {
                    src: outputs[k],
                    dst: slot,
                    bytes,
                };
                match step_of[o] {
                    Some(t) => per_step[t].push(copy),
                    None => tail.push(copy),
                }
                out_slots[k] = Some(slot);
            }
            per_step.push(tail);
            b.pre.push(Vec::new());
        }
        let scratch = b.finish_scratch()?;
        let mut kernels = Vec::new();
        for (t, ks) in per_step.into_iter().enumerate() {
            kernels.append(&mut b.pre[t]);
            kernels.extend(ks);
        }
        let (kernels_merged, merged_src) = b.merge(kernels, &outputs);
        let mut kernels = kernels_merged;
        // A small GEMM followed by an independent one (a layer's weight and input gradients) runs
        // on the side stream beside it: small GEMMs fill a few SMs, so the two take about as long
        // as one (H200: bn_mlp 63.4 → 58.6 µs a step; readme_cnn's batched convolution GEMMs ran
        // 4 µs slower side by side, so only single products up to 2^24 multiply-adds fork).
        // `LAMINA_CUDA_FORK=0` keeps every launch on the one stream.
        let small = |g: &Gemm| g.batch == 1 && g.m * g.n * g.k <= 1 << 24;
        let mut forks: Vec<Option<(CudaEvent, CudaEvent)>> = Vec::with_capacity(kernels.len());
        let fork_on = std::env::var("LAMINA_CUDA_FORK").as_deref() != Ok("0");
        for i in 0..kernels.len() {
            let pair = match (&kernels[i], kernels.get(i + 1)) {
                (Kernel::Gemm(x), Some(Kernel::Gemm(y))) => {
                    fork_on
                        && small(x)
                        && small(y)
                        && !matches!(forks.last(), Some(Some(_)))
                        && b.independent_gemms(x, y)
                }
                _ => false,
            };
            forks.push(if pair {
                let e = || ctx(dev.ctx.new_event(None), "creating an event");
                Some((e()?, e()?))
            } else {
                None
            });
        }
        // fused groups that now run inside a merged kernel are not compiled on their own
        let mut fused_used = vec![false; b.fused.len()];
        for k in &kernels {
            if let Kernel::Launch {
                func: Func::Fused(i),
                ..
            } = k
            {
                fused_used[*i] = true;
            }
        }
        // The fused groups are generated into a few modules of similar size and the planned
        // kernels into one more, compiled in parallel (NVRTC time is most of a cold start).
        let parts = (std::thread::available_parallelism().map_or(4, |n| n.get()) - 1).clamp(1, 8);
        let total: usize = b
            .fused
            .iter()
            .zip(&fused_used)
            .filter(|p| *p.1)
            .map(|(f, _)| f.source().len())
            .sum();
        let mut srcs: Vec<String> = Vec::new();
        let mut fused_module = vec![usize::MAX; b.fused.len()];
        for (i, f) in b.fused.iter().enumerate().filter(|p| fused_used[p.0]) {
            let s = f.source();
            let full = srcs
                .last()
                .is_none_or(|l| l.len() - codegen::PRELUDE.len() >= total.div_ceil(parts));
            if full {
                srcs.push(String::from(codegen::PRELUDE));
            }
            srcs.last_mut().expect("just pushed").push_str(&s);
            fused_module[i] = srcs.len() - 1;
        }
        let planned_module = srcs.len();
        if !b.planned.is_empty() {
            srcs.push(format!("{}{}", codegen::PRELUDE, b.planned));
        }
        // merged kernels spread over up to `parts` modules: each reduction a segment inlines
        // costs NVRTC ~0.05 s, so one module of them all would be a long cold start
        let mut merged_module: HashMap<String, usize> = HashMap::new();
        let n_merged = merged_src.len().min(parts);
        let first_merged = srcs.len();
        for _ in 0..n_merged {
            srcs.push(format!("{}{}", codegen::PRELUDE, segment::templates()));
        }
        for (i, (name, text)) in merged_src.iter().enumerate() {
            let m = first_merged + i % n_merged;
            srcs[m].push_str(text);
            merged_module.insert(name.clone(), m);
        }
        crate::dev::report(&format!("building {} plan steps", plan.steps.len()), t);
        // the parts of `kernels.cu` the launches name compile beside the plan's own modules
        let generic: Vec<String> = kernels
            .iter()
            .filter_map(|k| match k {
                Kernel::Launch {
                    func: Func::Generic(name),
                    ..
                } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let (modules, generic_loaded) = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let names: Vec<&str> = generic.iter().map(String::as_str).collect();
                dev.load_generic(&names)
            });
            let modules = dev.modules(&srcs, quick_start);
            let loaded = h
                .join()
                .unwrap_or_else(|_| Err(cuda_err("compiling the generic kernels panicked")));
            (modules, loaded)
        });
        let loaded = modules?;
        generic_loaded?;
        // the generated kernel each launch runs: its module, name and dynamic shared memory
        let mut module_of = Vec::with_capacity(kernels.len());
        for k in &mut kernels {
            let mut of = None;
            if let Kernel::Launch { func, f, .. } = k {
                let (m, name, dynamic) = match func {
                    Func::Generic(name) => {
                        *f = Some(dev.function(name)?);
                        module_of.push(None);
                        continue;
                    }
                    Func::Fused(i) => (fused_module[*i], b.fused[*i].name.clone(), 0),
                    Func::Planned(name) => (planned_module, name.clone(), 0),
                    Func::Merged(name, dynamic) => {
                        let m = merged_module.get(name).copied().ok_or_else(|| {
                            cuda_err(format!("merged kernel {name} has no module"))
                        })?;
                        (m, name.clone(), *dynamic)
                    }
                };
                *f = Some(load_kernel(&loaded[m].module, &name, dynamic)?);
                of = Some((m, name, dynamic));
            }
            module_of.push(of);
        }
        let upgrades = loaded
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.hash, l.upgrade.clone()?)))
            .collect();
        let modules = loaded.into_iter().map(|l| l.module).collect();
        crate::dev::report("compiling the plan (all of it)", t);
        let arena = (b.arena.ptr, b.arena.bytes);
        let feed = Feeder::new(dev, b.inputs, out_types, arena, mapped)?;
        Ok(CudaExecutable {
            dev: dev.clone(),
            plan: plan.clone(),
            _arena: b.arena,
            _consts: b.consts,
            _snapshots: b.snapshots,
            _scratch: scratch,
            feed,
            slots: b.slots,
            bind_states: b.bind_states,
            kernels,
            forks,
            outputs,
            out_slots,
            use_graph,
            profile: std::env::var_os("LAMINA_CUDA_PROFILE").is_some(),
            runs: 0,
            host_phases: [0.0; 5],
            replays: Vec::new(),
            graphs: [None, None],
            modules,
            module_of,
            upgrades,
        })
    }

    /// False while some kernels are quick builds whose optimised builds are still compiling in
    /// the background (see `CudaConfig::quick_start`).
    pub fn kernels_final(&self) -> bool {
        self.upgrades.is_empty()
    }

    /// Waits for the background compiles of this executable's optimised kernels and swaps them
    /// in (see `CudaConfig::quick_start`); returns at once when there are none.
    pub fn finish_compiling(&mut self) -> Result<()> {
        if self.upgrades.is_empty() {
            return Ok(());
        }
        let dev = self.dev.clone();
        let _busy = dev.lock();
        ctx(dev.ctx.bind_to_thread(), "binding the context")?;
        self.swap_upgrades(true)
    }

    /// Swaps in the optimised modules whose background compile has finished (with `wait`: all
    /// of them, waiting). The stream drains first, since the quick kernels may still be running,
    /// and the step is captured again on its next run. The caller holds the device lock with
    /// the context bound.
    fn swap_upgrades(&mut self, wait: bool) -> Result<()> {
        let ready: Vec<(usize, Result<Vec<u8>>)> = self
            .upgrades
            .iter()
            .enumerate()
            .filter_map(|(i, (_, _, up))| Some((i, up.poll(wait)?)))
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        self.dev.sync()?;
        let _quiet = not_capturing();
        self.graphs = [None, None];
        // back to front, so that the indices of the ones still to remove stay valid
        for (i, cubin) in ready.into_iter().rev() {
            let (m, hash, _) = self.upgrades.remove(i);
            let module = self.dev.upgraded(hash, cubin?)?;
            for (k, of) in self.kernels.iter_mut().zip(&self.module_of) {
                if let (Kernel::Launch { f, .. }, Some((km, name, dynamic))) = (k, of) {
                    if *km == m {
                        *f = Some(load_kernel(&module, name, *dynamic)?);
                    }
                }
            }
            self.modules[m] = module;
        }
        crate::dev::report("swapping in the optimised kernels", t);
        Ok(())
    }

    /// Enqueues every operation of the step on the stream.
    fn enqueue(&self) -> Result<()> {
        let (main, side) = (&self.dev.stream, &self.dev.side);
        for (i, k) in self.kernels.iter().enumerate() {
            match (k, &self.forks[i]) {
                (Kernel::Gemm(g), Some((fork, join))) => {
                    // the side stream starts after everything before on the main stream
                    ctx(fork.record(main), "recording an event")?;
                    ctx(side.wait(fork), "waiting for an event")?;
                    self.gemm(g, true)?;
                    ctx(join.record(side), "recording an event")?;
                }
                _ => {
                    self.launch(k)?;
                    if let Some(Some((_, join))) = i.checked_sub(1).map(|p| &self.forks[p]) {
                        // and everything after waits for it
                        ctx(main.wait(join), "waiting for an event")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the step launch by launch with events around each and prints the device time per
    /// kind of kernel (`LAMINA_CUDA_PROFILE=1`; for finding what to speed up, not for reports).
    fn profile(&self) -> Result<()> {
        let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::with_capacity(self.kernels.len() + 1);
        let first = ctx(self.dev.ctx.new_event(flags), "event")?;
        ctx(first.record(&self.dev.stream), "event")?;
        events.push(first);
        for k in &self.kernels {
            self.launch(k)?;
            let e = ctx(self.dev.ctx.new_event(flags), "event")?;
            ctx(e.record(&self.dev.stream), "event")?;
            events.push(e);
        }
        self.dev.sync()?;
        let mut by: HashMap<String, (f64, usize)> = HashMap::new();
        // `LAMINA_CUDA_PROFILE=all` also lists every launch in order (to see what the copies are)
        let each = std::env::var("LAMINA_CUDA_PROFILE").as_deref() == Ok("all");
        for (i, k) in self.kernels.iter().enumerate() {
            let us = ctx(events[i].elapsed_ms(&events[i + 1]), "event time")? as f64 * 1e3;
            let name = match k {
                Kernel::Launch {
                    func: Func::Generic(n),
                    ..
                } => n.clone(),
                Kernel::Launch {
                    func: Func::Planned(n) | Func::Merged(n, _),
                    ..
                } => n.split('_').next().unwrap_or("planned").into(),
                Kernel::Launch { .. } => "fused".into(),
                Kernel::Gemm(g) => format!(
                    "gemm{}{} {}x{}x{} b{}",
                    if g.ta { "T" } else { "N" },
                    if g.tb { "T" } else { "N" },
                    g.m,
                    g.n,
                    g.k,
                    g.batch
                ),
                Kernel::Copy { .. } => "copy".into(),
                Kernel::Lt(g) => g.name(),
            };
            if each {
                let what = match k {
                    Kernel::Copy { bytes, .. } => format!("{bytes} bytes"),
                    Kernel::Launch { grid, block, .. } => format!("{grid}x{block}"),
                    Kernel::Gemm(_) | Kernel::Lt(_) => String::new(),
                };
                eprintln!("  #{i:3} {us:8.1} us  {name} {what}");
            }
            let e = by.entry(name).or_default();
            e.0 += us;
            e.1 += 1;
        }
        let mut rows: Vec<_> = by.into_iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let total: f64 = rows.iter().map(|r| r.1 .0).sum();
        eprintln!(
            "lamina-cuda profile: {} launches, {total:.1} us of device time",
            self.kernels.len()
        );
        for (name, (us, n)) in rows.iter().take(12) {
            eprintln!("  {us:9.1} us  {n:4}x  {name}");
        }
        Ok(())
    }

    fn launch(&self, k: &Kernel) -> Result<()> {
        let stream = &self.dev.stream;
        {
            match k {
                Kernel::Launch {
                    func,
                    f,
                    grid,
                    block,
                    args,
                } => {
                    if *grid == 0 {
                        return Ok(());
                    }
                    let f = f.as_ref().expect("functions resolved at compile");
                    let ptrs: Vec<u64> = args
                        .iter()
                        .map(|a| match a {
                            Arg::Slot(s) => self.slots[*s],
                            _ => 0,
                        })
                        .collect();
                    let mut lb = stream.launch_builder(f);
                    for (a, p) in args.iter().zip(&ptrs) {
                        match a {
                            Arg::Slot(_) => lb.arg(p),
                            Arg::I64(v) => lb.arg(v),
                            Arg::U32(v) => lb.arg(v),
                            Arg::F64(v) => lb.arg(v),
                            Arg::Walk(w) => lb.arg(w),
                            Arg::Conv(c) => lb.arg(c),
                        };
                    }
                    let cfg = LaunchConfig {
                        grid_dim: (*grid, 1, 1),
                        block_dim: (*block, 1, 1),
                        shared_mem_bytes: match func {
                            Func::Merged(_, dynamic) => *dynamic,
                            _ => 0,
                        },
                    };
                    // SAFETY: argument lists match the kernels' signatures (built together in
                    // `Builder`), every slot is bound to memory of the planned size.
                    ctx(unsafe { lb.launch(cfg) }, "kernel launch")?;
                }
                Kernel::Gemm(g) => self.gemm(g, false)?,
                Kernel::Lt(g) => g.run(&self.dev, &self.slots)?,
                Kernel::Copy { src, dst, bytes } => {
                    if *bytes == 0 || self.slots[*src] == self.slots[*dst] {
                        return Ok(());
                    }
                    // SAFETY: both slots hold `bytes` bytes.
                    ctx(
                        unsafe {
                            drv::memcpy_dtod_async(
                                self.slots[*dst],
                                self.slots[*src],
                                *bytes,
                                stream.cu_stream(),
                            )
                        },
                        "device copy",
                    )?;
                }
            }
        }
        Ok(())
    }

    /// `side`: on the side stream's handle.
    fn gemm(&self, g: &Gemm, side: bool) -> Result<()> {
        let handle = if side {
            self.dev.blas_side
        } else {
            self.dev.blas
        };
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        let (m, n, k, batch) = (g.m as i32, g.n as i32, g.k as i32, g.batch as i32);
        let (pa, pb, pc) = (self.slots[g.a], self.slots[g.b], self.slots[g.out]);
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: B comes first. A dense row-major operand
        // is its column-major transpose with ld = its row length; a transposed one needs op T.
        let ldb = if g.tb { k } else { n };
        let lda = if g.ta { m } else { k };
        let (sa, sb, sc) = (g.stride_a as i64, g.stride_b as i64, (g.m * g.n) as i64);
        // SAFETY: the slots hold `batch` operands of the sizes above (or one, with stride 0), and
        // the handle works on this executable's stream.
        unsafe {
            if g.f64 {
                let (one, zero) = (1.0f64, 0.0f64);
                ctx(
                    blas::dgemm_strided_batched(
                        handle,
                        op(g.tb),
                        op(g.ta),
                        n,
                        m,
                        k,
                        &one,
                        pb as *const f64,
                        ldb,
                        sb,
                        pa as *const f64,
                        lda,
                        sa,
                        &zero,
                        pc as *mut f64,
                        n,
                        sc,
                        batch,
                    ),
                    "cublasDgemmStridedBatched",
                )
            } else {
                let (one, zero) = (1.0f32, 0.0f32);
                ctx(
                    blas::sgemm_strided_batched(
                        handle,
                        op(g.tb),
                        op(g.ta),
                        n,
                        m,
                        k,
                        &one,
                        pb as *const f32,
                        ldb,
                        sb,
                        pa as *const f32,
                        lda,
                        sa,
                        &zero,
                        pc as *mut f32,
                        n,
                        sc,
                        batch,
                    ),
                    "cublasSgemmStridedBatched",
                )
            }
        }
    }

    /// Device bytes this executable holds: arena, constants, state snapshots, scratch and both
    /// turns of input buffers.
    pub fn device_bytes(&self) -> usize {
        let sum = |v: &[DevMem]| v.iter().map(|m| m.bytes).sum::<usize>();
        self._arena.bytes
            + sum(&self._consts)
            + sum(&self._snapshots)
            + sum(&self._scratch)
            + self.feed.device_bytes()
    }

    /// The staging memory of fed input `k` for the next submit (see `Backend::staging`).
    pub(crate) fn staging(&mut self, k: usize) -> Result<&mut [u8]> {
        let _busy = self.dev.lock();
        ctx(self.dev.ctx.bind_to_thread(), "binding the context")?;
        self.feed.staging(k)
    }

    /// Runs the plan once and waits for it (see `Backend::run`).
    pub(crate) fn execute(
        &mut self,
        state: &mut StateMap<CudaBuffer>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        self.plan.check_inputs(inputs)?;
        let feeds: Vec<Feed> = inputs.iter().map(|t| Feed::Host(t)).collect();
        self.submit(state, &feeds)?.wait()
    }

    /// Enqueues the inputs' copies, the step and the outputs' copies (see `Backend::submit`).
    pub(crate) fn submit(
        &mut self,
        state: &mut StateMap<CudaBuffer>,
        inputs: &[Feed<'_>],
    ) -> Result<PendingOutputs> {
        let started = std::time::Instant::now();
        if inputs.len() != self.plan.inputs.len() {
            return Err(Error::Input(format!(
                "expected {} inputs, got {}",
                self.plan.inputs.len(),
                inputs.len()
            )));
        }
        let hosts: Vec<&HostTensor> = inputs
            .iter()
            .filter_map(|f| match f {
                Feed::Host(t) => Some(*t),
                Feed::Staged => None,
            })
            .collect();
        if hosts.len() == inputs.len() {
            self.plan.check_inputs(&hosts)?;
        } else {
            for (k, f) in inputs.iter().enumerate() {
                let ty = &self.plan.graph.nodes[self.plan.inputs[k]].ty;
                if let Feed::Host(t) = f {
                    if t.shape() != ty.shape.as_slice() || t.dtype() != ty.dtype {
                        return Err(Error::Input(format!(
                            "input {k}: expected {}, got {}{}",
                            ty.describe(),
                            t.dtype(),
                            shape_text(t.shape())
                        )));
                    }
                }
            }
        }
        // `check_state` without its per-buffer clone of the type: this runs every step
        for (name, ty) in &self.plan.states {
            match state.get(name) {
                Some(b) if b.ty == *ty => {}
                // the same test, with the error message
                _ => {
                    check_state(&self.plan, state, |b: &CudaBuffer| b.ty.clone())?;
                    break;
                }
            }
        }
        let t_checked = std::time::Instant::now();
        let dev = self.dev.clone();
        let _busy = dev.lock();
        ctx(self.dev.ctx.bind_to_thread(), "binding the context")?;
        if !self.upgrades.is_empty() {
            self.swap_upgrades(false)?;
        }
        let t_bound = std::time::Instant::now();
        let turn = self.feed.turn();
        self.feed.send(inputs)?;
        let t_sent = std::time::Instant::now();
        for (k, &id) in self.plan.inputs.iter().enumerate() {
            self.slots[id] = self.feed.input_at(turn, k);
        }
        for (k, s) in self.out_slots.iter().enumerate() {
            if let (Some(s), Some(p)) = (s, self.feed.mapped_at(turn, k)) {
                self.slots[*s] = p;
            }
        }
        // the turn's graph is stale when a state buffer moved since its capture
        let mut stale = self.graphs[turn].is_none();
        for (k, (slot, name)) in self.bind_states.iter().enumerate() {
            let buf = state
                .get(name)
                .ok_or_else(|| cuda_err(format!("state \"{name}\" is missing")))?;
            self.slots[*slot] = buf.mem.ptr;
            stale |= !matches!(&self.graphs[turn], Some((_, p)) if p[k] == buf.mem.ptr);
        }
        self.runs += 1;
        // the 10th run of a profiled executable also reports host time against graph time
        let mut timed = None;
        if self.runs == 3 && self.profile {
            // the profiled launches are this run
            self.profile()?;
        } else if self.use_graph {
            if stale {
                let state_ptrs = self
                    .bind_states
                    .iter()
                    .map(|(slot, _)| self.slots[*slot])
                    .collect();
                self.graphs[turn] = None;
                // A failed capture is not an error: this run goes launch by launch and the next
                // one tries again (tests check that training steps do end up captured).
                self.graphs[turn] = self.capture().ok().flatten().map(|g| (g, state_ptrs));
            }
            match &self.graphs[turn] {
                Some((g, _)) => {
                    if self.profile && (self.runs == 10 || (20..120).contains(&self.runs)) {
                        // events around the replay: its device time, and (runs 20-119) the
                        // device time between two replays (copies, waits, writes)
                        let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
                        let e0 = ctx(self.dev.ctx.new_event(flags), "event")?;
                        let e1 = ctx(self.dev.ctx.new_event(flags), "event")?;
                        ctx(e0.record(&self.dev.stream), "event")?;
                        ctx(g.launch(), "launching the step's graph")?;
                        ctx(e1.record(&self.dev.stream), "event")?;
                        if self.runs == 10 {
                            timed = Some((e0, e1));
                        } else {
                            self.replays.push((e0, e1));
                        }
                    } else {
                        ctx(g.launch(), "launching the step's graph")?
                    }
                }
                None => self.enqueue()?,
            }
        } else {
            self.enqueue()?;
        }
        let t_launched = std::time::Instant::now();
        let srcs: Vec<u64> = self.outputs.iter().map(|&s| self.slots[s]).collect();
        let pending = self.feed.receive(&srcs)?;
        if self.profile && (20..120).contains(&self.runs) {
            let marks = [
                started,
                t_checked,
                t_bound,
                t_sent,
                t_launched,
                std::time::Instant::now(),
            ];
            for (k, w) in marks.windows(2).enumerate() {
                self.host_phases[k] += (w[1] - w[0]).as_secs_f64() * 1e6;
            }
            if self.runs == 119 {
                let [c, b, i, l, o] = self.host_phases.map(|t| t / 100.0);
                eprintln!(
                    "lamina-cuda host per step (runs 20-119): checks {c:.1} us, lock {b:.1}, inputs in {i:.1}, launch {l:.1}, outputs out {o:.1}"
                );
            }
        }
        if self.profile && self.runs == 120 && self.replays.len() > 1 {
            self.dev.sync()?;
            let (mut graph, mut gap) = (0.0, 0.0);
            for w in self.replays.windows(2) {
                graph += ctx(w[0].0.elapsed_ms(&w[0].1), "event time")? as f64 * 1e3;
                gap += ctx(w[0].1.elapsed_ms(&w[1].0), "event time")? as f64 * 1e3;
            }
            let n = (self.replays.len() - 1) as f64;
            eprintln!(
                "lamina-cuda replays (runs 20-119): graph {:.1} us, between graphs {:.1} us, outputs out in {} copies",
                graph / n,
                gap / n,
                self.feed.output_copies(&self.outputs.iter().map(|&s| self.slots[s]).collect::<Vec<_>>())
            );
            self.replays.clear();
        }
        if let Some((e0, e1)) = timed {
            let graph_us = ctx(e0.elapsed_ms(&e1), "event time")? as f64 * 1e3;
            eprintln!(
                "lamina-cuda step: {:.1} us in submit and until the graph ended (inputs in, graph), graph {graph_us:.1} us on the device",
                started.elapsed().as_secs_f64() * 1e6
            );
        }
        Ok(pending)
    }

    /// Captures the step into a CUDA graph; `None` when the plan has no work.
    fn capture(&self) -> Result<Option<CudaGraph>> {
        let t = std::time::Instant::now();
        let _alone = capturing();
        let stream = &self.dev.stream;
        ctx(
            stream.begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
            "beginning graph capture",
        )?;
        let enq = self.enqueue();
        let g = stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
        enq?;
        let g = ctx(g, "capturing the step as a CUDA graph");
        crate::dev::report("capturing the step", t);
        g
    }
}

/// Kernel `name` of module `m`, allowed `dynamic` bytes of dynamic shared memory.
fn load_kernel(
    m: &Arc<cudarc::driver::CudaModule>,
    name: &str,
    dynamic: u32,
) -> Result<CudaFunction> {
    let f = ctx(m.load_function(name), &format!("kernel {name}"))?;
    if dynamic > 0 {
        use cudarc::driver::sys::CUfunction_attribute_enum as attr;
        let fixed = f.get_attribute(attr::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
        ctx(
            f.set_attribute(
                attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic as i32,
            ),
            &format!(
                "kernel {name}: {dynamic} bytes of dynamic shared memory beside {fixed:?} static"
            ),
        )?;
    }
    Ok(f)
}

impl Drop for CudaExecutable {
    fn drop(&mut self) {
        // destroying the graph and unloading the module must not overlap another thread's capture
        let _quiet = not_capturing();
        self.graphs = [None, None];
        self.modules.clear();
    }
}

/// Compile-time state: memory, slot bindings, snapshots, generated kernels.
struct Builder<'p> {
    plan: &'p Plan,
    dev: Arc<Dev>,
    arena: DevMem,
    slots: Vec<u64>,
    consts: Vec<DevMem>,
    materialised: Vec<bool>,
    snapshots: Vec<DevMem>,
    snap_of: HashMap<String, usize>,
    /// Slots that point into the mapped output buffer: (dtype, elements).
    mapped_out: HashMap<usize, (DType, usize)>,
    assigned: HashMap<String, usize>,
    pre: Vec<Vec<Kernel>>,
    /// Device buffers of the fed inputs, both turns.
    inputs: crate::feed::InputMem,
    bind_states: Vec<(usize, String)>,
    fused: Vec<FusedText>,
    /// Transposes that every user (all MatMuls) reads through a GEMM flag, so they never run.
    through: std::collections::HashSet<NodeId>,
    /// MatMuls that read their right operand from a transposed copy in scratch (see
    /// `find_through`).
    transposed_right: std::collections::HashSet<NodeId>,
    /// Source of the kernels generated for this plan besides the fused groups.
    planned: String,
    /// Slots of the shared scratch buffers (im2col columns, GEMM results) and their sizes so far.
    scratch: Vec<(usize, usize)>,
    /// Forward convolutions' per-image im2col columns (slots of their own buffers) by input node
    /// and geometry: a kernel gradient of the same input and geometry reads them (`conv.rs`).
    conv_cols: HashMap<(NodeId, [i64; 17]), usize>,
    /// The cuBLASLt handle, once a step needs one (`lt.rs`).
    lt: Option<Arc<lt::LtHandle>>,
    /// Epilogue GEMMs by the step of the group they replace, and the MatMul steps they absorb.
    epilogues: HashMap<usize, lt::Epilogue>,
    skip_steps: std::collections::HashSet<usize>,
    /// Values never written whose readers read another node's slot instead (a pre-activation
    /// read only as `0 < z`, read from the ReLU's output).
    alias: HashMap<NodeId, NodeId>,
}

impl<'p> Builder<'p> {
    fn new(dev: &Arc<Dev>, plan: &'p Plan) -> Result<Builder<'p>> {
        let g = &plan.graph;
        let n = g.nodes.len();
        if plan.storage.len() != n {
            return Err(cuda_err(format!(
                "plan has {} storage entries for {n} nodes",
                plan.storage.len()
            )));
        }
        for (id, nd) in g.nodes.iter().enumerate() {
            if matches!(nd.ty.dtype, DType::F16 | DType::BF16) {
                return Err(cuda_err(format!(
                    "%{id} ({}): dtype {} is not supported by the CUDA backend (use f32 or f64)",
                    nd.op.name(),
                    nd.ty.dtype
                )));
            }
        }
        let arena = DevMem::new(&dev.ctx, plan.arena_bytes)?;
        let mut slots = vec![0u64; n];
        // two turns of input buffers (`feed.rs`); the slots hold turn 0's until a run binds its
        // turn's
        let inputs = crate::feed::InputMem::new(
            dev,
            plan.inputs
                .iter()
                .map(|&i| numel(&g.nodes[i].ty.shape) * g.nodes[i].ty.dtype.size_bytes())
                .collect(),
        )?;
        let mut bind_states = Vec::new();
        for (id, s) in plan.storage.iter().enumerate() {
            let ty = &g.nodes[id].ty;
            let need = numel(&ty.shape) * ty.dtype.size_bytes();
            match s {
                Storage::Arena { offset, bytes } => {
                    if *bytes < need || offset + bytes > plan.arena_bytes {
                        return Err(cuda_err(format!(
                            "%{id}: arena range {offset}+{bytes} does not hold {} in an arena of {} bytes",
                            ty.describe(),
                            plan.arena_bytes
                        )));
                    }
                    slots[id] = arena.ptr + *offset as u64;
                }
                Storage::Input(k) => {
                    if plan.inputs.get(*k) != Some(&id) {
                        return Err(cuda_err(format!(
                            "%{id} is stored as input {k}, which the plan feeds elsewhere"
                        )));
                    }
                    slots[id] = inputs.at(0, *k);
                }
                Storage::State(name) => {
                    if !plan.states.iter().any(|(s, t)| s == name && t == ty) {
                        return Err(cuda_err(format!(
                            "%{id} is stored in state \"{name}\", which the plan does not declare as {}",
                            ty.describe()
                        )));
                    }
                    bind_states.push((id, name.clone()));
                }
                Storage::View(r) => {
                    let ok = *r < n && !matches!(plan.storage[*r], Storage::View(_)) && {
                        let rt = &g.nodes[*r].ty;
                        numel(&rt.shape) == numel(&ty.shape) && rt.dtype == ty.dtype
                    };
                    if !ok {
                        return Err(cuda_err(format!(
                            "%{id} is a view of %{r}, which does not hold the same elements"
                        )));
                    }
                }
                Storage::Const | Storage::Inline => {}
            }
        }
        Ok(Builder {
            plan,
            dev: dev.clone(),
            arena,
            slots,
            consts: Vec::new(),
            materialised: vec![false; n],
            snapshots: Vec::new(),
            snap_of: HashMap::new(),
            mapped_out: HashMap::new(),
            assigned: HashMap::new(),
            pre: vec![Vec::new(); plan.steps.len()],
            inputs,
            bind_states,
            fused: Vec::new(),
            through: Default::default(),
            transposed_right: Default::default(),
            planned: String::new(),
            scratch: Vec::new(),
            conv_cols: HashMap::new(),
            lt: None,
            epilogues: HashMap::new(),
            skip_steps: Default::default(),
            alias: HashMap::new(),
        })
    }

    /// A tiled transpose of the last two axes (`[batch, rows, cols]` → `[batch, cols, rows]`)
    /// through shared memory, so both its reads and its writes coalesce (a strided copy writes
    /// at a quarter of the bandwidth); one 32×32 tile per block of 256 threads. Returns the name
    /// and the grid.
    fn transpose_kernel(
        &mut self,
        dt: DType,
        batch: usize,
        rows: usize,
        cols: usize,
    ) -> (String, u32) {
        let name = format!("transpose_{}", self.planned.matches("__global__").count());
        let ty = codegen::c_type(dt);
        let (tr, tc) = (rows.div_ceil(32), cols.div_ceil(32));
        self.planned.push_str(&format!(
            r#"extern "C" __global__ void {name}({ty}* out, const {ty}* in) {{
  __shared__ {ty} tile[32][33];
  unsigned t = blockIdx.x, tx = threadIdx.x & 31u, ty = threadIdx.x >> 5;
  unsigned tc = t % {tc}u; t /= {tc}u;
  unsigned tr = t % {tr}u, b = t / {tr}u;
  const {ty}* src = in + (unsigned long long)b * {rows}ull * {cols}ull;
  {ty}* dst = out + (unsigned long long)b * {rows}ull * {cols}ull;
  unsigned x = tc * 32u + tx;
  for (unsigned j = ty; j < 32u; j += 8u) {{
    unsigned y = tr * 32u + j;
    if (x < {cols}u && y < {rows}u) tile[j][tx] = src[(unsigned long long)y * {cols}ull + x];
  }}
  __syncthreads();
  x = tr * 32u + tx;
  for (unsigned j = ty; j < 32u; j += 8u) {{
    unsigned y = tc * 32u + j;
    if (x < {rows}u && y < {cols}u) dst[(unsigned long long)y * {rows}ull + x] = tile[tx][j];
  }}
}}
"#
        ));
        (name, (batch * tr * tc) as u32)
    }

    /// Sums over the rows of a `[rows, cols]` walk (`out[j] = Σ_r src[r·stride + j]`, `cols`
    /// outputs): a block holds 32 neighbouring columns × `lanes` lanes over the rows, each lane
    /// with four loads in flight (a load per iteration left the kernel waiting on memory), the
    /// partial sums (in double) combined in a fixed order. Returns the name.
    fn colsum_kernel(
        &mut self,
        dt: DType,
        cols: usize,
        rows: usize,
        stride: usize,
        lanes: usize,
    ) -> String {
        let name = format!("colsum_{}", self.planned.matches("__global__").count());
        let ty = codegen::c_type(dt);
        self.planned.push_str(&format!(
            r#"extern "C" __global__ void {name}({ty}* out, const {ty}* src) {{
  __shared__ double sh[32][33];
  unsigned tx = threadIdx.x & 31u, ty = threadIdx.x >> 5;
  unsigned long long j = (unsigned long long)blockIdx.x * 32ull + tx;
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  if (j < {cols}ull) {{
    const {ty}* p = src + j;
    unsigned long long r = ty;
    for (; r + {l3}ull < {rows}ull; r += {l4}ull) {{
      a0 += p[r * {stride}ull];
      a1 += p[(r + {lanes}ull) * {stride}ull];
      a2 += p[(r + {l2}ull) * {stride}ull];
      a3 += p[(r + {l3}ull) * {stride}ull];
    }}
    for (; r < {rows}ull; r += {lanes}ull) a0 += p[r * {stride}ull];
  }}
  sh[ty][tx] = (a0 + a1) + (a2 + a3);
  __syncthreads();
  if (ty == 0 && j < {cols}ull) {{
    double t = 0;
    for (unsigned y = 0; y < {lanes}u; ++y) t += sh[y][tx];
    out[j] = ({ty})t;
  }}
}}
"#,
            l2 = 2 * lanes,
            l3 = 3 * lanes,
            l4 = 4 * lanes,
        ));
        name
    }

    /// Scratch buffer `which` of at least `bytes` for one step (steps run one after another, so
    /// they share it).
    fn scratch(&mut self, which: usize, bytes: usize) -> Result<usize> {
        while self.scratch.len() <= which {
            self.slots.push(0);
            self.scratch.push((self.slots.len() - 1, 0));
        }
        let (slot, size) = self.scratch[which];
        self.scratch[which] = (slot, size.max(bytes));
        Ok(slot)
    }

    /// Allocates the scratch buffers once every step is compiled.
    fn finish_scratch(&mut self) -> Result<Vec<DevMem>> {
        let mut mems = Vec::new();
        for &(slot, bytes) in &self.scratch {
            let mem = DevMem::new(&self.dev.ctx, bytes)?;
            self.slots[slot] = mem.ptr;
            mems.push(mem);
        }
        Ok(mems)
    }

    /// Permutes swapping the last two axes whose users are all later MatMuls that can read the
    /// permute's operand (unchanged since) with a transpose flag.
    fn find_through(&mut self) {
        let g = &self.plan.graph;
        let users = g.users();
        let step_of = self.plan.step_of_nodes();
        for (id, node) in g.nodes.iter().enumerate() {
            if node.op.swaps_last_two_axes() && self.plan.matmuls_read_through(id, &step_of, &users)
            {
                self.through.insert(id);
            }
        }
        // An f32 GEMM on the tensor cores wants its operands K-major (TF32 MMA reads K-major
        // tiles): a left operand read through a transpose is M-major, and so is a right operand
        // stored as it is. When neither operand would be K-major (a weight gradient `hᵀ·dz`),
        // one is materialised transposed: the right one into scratch when it is no larger, so
        // that both are read transposed, else the left one. H100, cuBLASLt TF32, 4096×4096×2048
        // (`tools/bench/cublaslt_epilogues.cu`): both operands M-major 273.7 µs, the left one
        // materialised 209.7, the right one 173.4 (+ the same transpose, ~25 µs);
        // 4096×1024×2048: 76.8 / 61.4 / 48.3.
        // Small GEMMs are latency-bound, not MMA-bound: reading through costs them nothing, and a
        // transpose in a segment costs one block an uncoalesced pass.
        if self.dev.tf32 {
            for (id, node) in g.nodes.iter().enumerate() {
                if !matches!(node.op, Op::MatMul) || node.ty.dtype != DType::F32 {
                    continue;
                }
                let (a, b) = (node.inputs[0], node.inputs[1]);
                let r = node.ty.shape.len();
                let k = g.nodes[a].ty.shape[r - 1];
                // (strictly above the side stream's bound: the scratch is not shared by a fork)
                if numel(&node.ty.shape) * k <= 1 << 24 {
                    continue;
                }
                if self.through.contains(&a) && !self.through.contains(&b) {
                    if numel(&g.nodes[b].ty.shape) <= numel(&g.nodes[a].ty.shape) {
                        self.transposed_right.insert(id);
                    } else {
                        self.through.remove(&a);
                    }
                }
            }
        }
    }

    /// How a MatMul reads operand `x`: its slot, and whether that holds `x` transposed.
    fn mat_operand(&mut self, x: NodeId) -> Result<(usize, bool)> {
        if self.through.contains(&x) {
            let q = self.plan.graph.nodes[x].inputs[0];
            Ok((self.read(q)?, true))
        } else {
            Ok((self.read(x)?, false))
        }
    }

    fn op(&self, id: NodeId) -> &'p Op {
        &self.plan.graph.nodes[id].op
    }
    fn shape(&self, id: NodeId) -> &'p [usize] {
        &self.plan.graph.nodes[id].ty.shape
    }
    fn dtype(&self, id: NodeId) -> DType {
        self.plan.graph.nodes[id].ty.dtype
    }
    fn len(&self, id: NodeId) -> usize {
        numel(self.shape(id))
    }
    fn splat(&self, id: NodeId) -> Option<f64> {
        match self.op(self.plan.root(id)) {
            Op::Const {
                value: Literal::Splat(v),
                ..
            } => Some(*v),
            _ => None,
        }
    }

    /// The slot holding `id`'s value for a reader compiled at the current step.
    fn read(&mut self, id: NodeId) -> Result<usize> {
        let id = self.alias.get(&id).copied().unwrap_or(id);
        if id >= self.plan.graph.nodes.len() {
            return Err(cuda_err(format!(
                "plan refers to node %{id}, which does not exist"
            )));
        }
        let r = self.plan.root(id);
        match &self.plan.storage[r] {
            Storage::Inline | Storage::View(_) => Err(cuda_err(format!(
                "%{id} ({}) is read but the plan stores no value for it",
                self.op(id).name()
            ))),
            Storage::Const => {
                self.materialise(r)?;
                Ok(r)
            }
            Storage::State(name)
                if matches!(self.op(r), Op::State { .. }) && self.assigned.contains_key(name) =>
            {
                self.snapshot(&name.clone(), r)
            }
            Storage::State(_) | Storage::Input(_) | Storage::Arena { .. } => Ok(r),
        }
    }

    fn write(&self, id: NodeId) -> Result<usize> {
        match self.plan.storage[id] {
            Storage::Arena { .. } => Ok(id),
            Storage::State(_) if !matches!(self.op(id), Op::State { .. } | Op::Assign { .. }) => {
                Ok(id)
            }
            ref s => Err(cuda_err(format!(
                "%{id} ({}) is computed by a step but stored as {s:?}",
                self.op(id).name()
            ))),
        }
    }

    fn snapshot(&mut self, name: &str, state_node: NodeId) -> Result<usize> {
        if let Some(&s) = self.snap_of.get(name) {
            return Ok(s);
        }
        let bytes = self.len(state_node) * self.dtype(state_node).size_bytes();
        let mem = DevMem::new(&self.dev.ctx, bytes)?;
        let slot = self.slots.len();
        self.slots.push(mem.ptr);
        self.snapshots.push(mem);
        self.snap_of.insert(name.to_string(), slot);
        self.pre[self.assigned[name]].push(Kernel::Copy {
            src: state_node,
            dst: slot,
            bytes,
        });
        Ok(slot)
    }

    fn materialise(&mut self, id: NodeId) -> Result<()> {
        if self.materialised[id] {
            return Ok(());
        }
        self.materialised[id] = true;
        let Op::Const { value, .. } = self.op(id) else {
            return Err(cuda_err(format!(
                "%{id} ({}) is stored as a constant",
                self.op(id).name()
            )));
        };
        let n = self.len(id);
        let vals: Vec<f64> = (0..n).map(|i| value.get(i)).collect();
        let t = HostTensor::from_f64(self.shape(id), self.dtype(id), &vals)?;
        let bytes = crate::host_bytes(&t);
        let mem = DevMem::new(&self.dev.ctx, bytes.len())?;
        // SAFETY: `mem` holds `bytes.len()` bytes.
        ctx(
            unsafe { drv::memcpy_htod_sync(mem.ptr, bytes) },
            "copying a constant to the device",
        )?;
        self.slots[id] = mem.ptr;
        self.consts.push(mem);
        Ok(())
    }

    /// The launches of `Step::Node(id)` at step `t`.
    fn node(&mut self, id: NodeId, t: usize) -> Result<Vec<Kernel>> {
        let node = &self.plan.graph.nodes[id];
        for &i in &node.inputs {
            if i >= self.plan.graph.nodes.len() {
                return Err(cuda_err(format!(
                    "plan refers to node %{i}, which does not exist"
                )));
            }
        }
        let dt = node.ty.dtype;
        let shape = &node.ty.shape;
        let n = numel(shape);
        let x = node.inputs.first().copied();
        let xshape = |b: &Self| x.map(|x| b.shape(x)).unwrap_or(&[]);
        let split = |s: &[usize], axis: usize| (numel(&s[..axis]), s[axis], numel(&s[axis + 1..]));
        let float = |what: &str| -> Result<bool> {
            match dt {
                DType::F32 => Ok(false),
                DType::F64 => Ok(true),
                _ => Err(cuda_err(format!("%{id}: {what} of {dt} is not supported"))),
            }
        };
        Ok(match &node.op {
            Op::Input { .. } | Op::State { .. } | Op::Const { .. } => vec![],
            Op::Neg
            | Op::Recip
            | Op::Sqrt
            | Op::Exp
            | Op::Log
            | Op::Tanh
            | Op::Erf
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Max
            | Op::CmpLt
            | Op::CmpEq
            | Op::Where
            | Op::Cast { .. } => self.fused(&[id], &[id])?,
            Op::Iota { axis, .. } => {
                let (_, dim, inner) = split(shape, *axis);
                let out = self.write(id)?;
                vec![elementwise(
                    format!("iota_{}", sfx(dt)),
                    n,
                    vec![
                        Arg::Slot(out),
                        Arg::I64(n as i64),
                        Arg::I64(dim.max(1) as i64),
                        Arg::I64(inner.max(1) as i64),
                    ],
                )]
            }
            Op::RandomBits { stream, .. } => {
                let key = self.read(node.inputs[0])?;
                let out = self.write(id)?;
                vec![elementwise(
                    "random_bits".into(),
                    n.div_ceil(4),
                    vec![
                        Arg::Slot(out),
                        Arg::I64(n as i64),
                        Arg::Slot(key),
                        Arg::U32(*stream),
                    ],
                )]
            }
            Op::ReduceSum { axes } | Op::ReduceMax { axes } => {
                if dt == DType::Bool {
                    return Err(cuda_err(format!(
                        "%{id}: {} of bool is not defined",
                        node.op.name()
                    )));
                }
                let kind = if matches!(node.op, Op::ReduceSum { .. }) {
                    "sum"
                } else {
                    "max"
                };
                let xs = xshape(self).to_vec();
                let st = strides(&xs);
                let (mut ks, mut kt, mut rs, mut rt) = (vec![], vec![], vec![], vec![]);
                for d in 0..xs.len() {
                    if axes.contains(&d) {
                        rs.push(xs[d]);
                        rt.push(st[d]);
                    } else {
                        ks.push(xs[d]);
                        kt.push(st[d]);
                    }
                }
                let n_red = numel(&rs);
                let src = self.read(node.inputs[0])?;
                let out = self.write(id)?;
                let keep = Walk::new(&ks, &kt, 0)?;
                let args = vec![
                    Arg::Slot(out),
                    Arg::Slot(src),
                    Arg::I64(n as i64),
                    Arg::I64(n_red as i64),
                    Arg::Walk(keep),
                    Arg::Walk(Walk::new(&rs, &rt, 0)?),
                ];
                // Neighbouring outputs that are neighbours in memory: 32 outputs per block, reads
                // coalesced. Else short reductions a thread per output, long ones a block each.
                let adjacent = keep.rank > 0 && keep.stride[keep.rank as usize - 1] == 1;
                if kind == "sum" && !adjacent && n_red > 64 {
                    // few outputs with long sums (conv bias gradients): two passes (`conv.rs`)
                    let red = Walk::new(&rs, &rt, 0)?;
                    if let Some(ks) = self.split_sum(dt, (n, n_red), &keep, &red, [src, out])? {
                        return Ok(ks);
                    }
                }
                let (variant, grid, block) = if adjacent && n_red > 8 {
                    // 32 outputs per block and up to 32 lanes over the reduced elements
                    let lanes = n_red.div_ceil(8).clamp(1, 32) as u32;
                    (
                        "cols",
                        n.div_ceil(32).min(i32::MAX as usize) as u32,
                        32 * lanes,
                    )
                } else if n_red <= 64 {
                    ("thread", grid_for(n), BLOCK)
                } else {
                    // few outputs: more threads on each
                    let threads = if n < 1024 && n_red >= 1 << 14 {
                        1024
                    } else {
                        BLOCK
                    };
                    ("block", n.min(65535) as u32, threads)
                };
                let red = Walk::new(&rs, &rt, 0)?;
                let plain = keep.rank == 1 && keep.stride[0] == 1 && red.rank == 1;
                if variant == "cols"
                    && kind == "sum"
                    && plain
                    && matches!(dt, DType::F32 | DType::F64)
                    && n * n_red > segment::segment_limit()
                {
                    // the common bias gradient: column sums of a row-major matrix, with its
                    // sizes as constants and four loads in flight per thread (small ones stay
                    // generic, so that a segment takes them in)
                    let name = self.colsum_kernel(
                        dt,
                        n,
                        n_red,
                        red.stride[0] as usize,
                        block as usize / 32,
                    );
                    return Ok(vec![Kernel::Launch {
                        func: Func::Planned(name),
                        f: None,
                        grid,
                        block,
                        args: vec![Arg::Slot(out), Arg::Slot(src)],
                    }]);
                }
                vec![Kernel::Launch {
                    func: Func::Generic(format!("reduce_{kind}_{variant}_{}", sfx(dt))),
                    f: None,
                    grid,
                    block,
                    args,
                }]
            }
            Op::ArgMax { axis } => {
                let (outer, dim, inner) = split(xshape(self), *axis);
                let xdt = self.dtype(node.inputs[0]);
                let src = self.read(node.inputs[0])?;
                let out = self.write(id)?;
                vec![elementwise(
                    format!("argmax_{}", sfx(xdt)),
                    outer * inner,
                    vec![
                        Arg::Slot(out),
                        Arg::Slot(src),
                        Arg::I64(outer as i64),
                        Arg::I64(dim as i64),
                        Arg::I64(inner as i64),
                    ],
                )]
            }
            Op::Reshape { .. } => match self.plan.storage[id] {
                Storage::View(_) => vec![],
                _ => {
                    let src = self.read(node.inputs[0])?;
                    let dst = self.write(id)?;
                    vec![Kernel::Copy {
                        src,
                        dst,
                        bytes: n * dt.size_bytes(),
                    }]
                }
            },
            Op::Permute { .. } if self.through.contains(&id) => vec![],
            Op::Permute { .. }
                if node.op.swaps_last_two_axes()
                    && matches!(dt, DType::F32 | DType::F64)
                    && xshape(self).len() >= 2
                    && n > segment::segment_limit()
                    && n < 1 << 32
                    && n.div_ceil(1024) < 1 << 31 =>
            {
                let xs = xshape(self);
                let r = xs.len();
                let (rows, cols) = (xs[r - 2], xs[r - 1]);
                let batch = numel(&xs[..r - 2]);
                let src = self.read(node.inputs[0])?;
                let out = self.write(id)?;
                // (a small transpose stays a generic copy, so that a segment takes it in)
                let (name, grid) = self.transpose_kernel(dt, batch, rows, cols);
                vec![Kernel::Launch {
                    func: Func::Planned(name),
                    f: None,
                    grid,
                    block: BLOCK,
                    args: vec![Arg::Slot(out), Arg::Slot(src)],
                }]
            }
            Op::Permute { perm } => {
                let st = strides(xshape(self));
                let walk = Walk::new(shape, &perm.iter().map(|&p| st[p]).collect::<Vec<_>>(), 0)?;
                self.copy(id, walk)?
            }
            Op::Expand { shape: to } => {
                let walk = Walk::new(to, &broadcast_strides(xshape(self), to), 0)?;
                self.copy(id, walk)?
            }
            Op::Slice { start, stride, .. } => {
                let st = strides(xshape(self));
                let offset = start.iter().zip(&st).map(|(a, s)| a * s).sum();
                let walk = Walk::new(
                    shape,
                    &st.iter()
                        .zip(stride)
                        .map(|(s, k)| s * k)
                        .collect::<Vec<_>>(),
                    offset,
                )?;
                self.copy(id, walk)?
            }
            Op::Pad {
                lo,
                interior,
                value,
                ..
            } => {
                let ost = strides(shape);
                let offset = lo.iter().zip(&ost).map(|(a, s)| a * s).sum();
                let xs = xshape(self).to_vec();
                let walk = Walk::new(
                    &xs,
                    &ost.iter()
                        .zip(interior)
                        .map(|(s, i)| s * (i + 1))
                        .collect::<Vec<_>>(),
                    offset,
                )?;
                let src = self.read(node.inputs[0])?;
                let out = self.write(id)?;
                vec![
                    elementwise(
                        format!("fill_{}", sfx(dt)),
                        n,
                        vec![Arg::Slot(out), Arg::I64(n as i64), Arg::F64(*value)],
                    ),
                    elementwise(
                        format!("scatter_{}", sfx(dt)),
                        numel(&xs),
                        vec![
                            Arg::Slot(out),
                            Arg::Slot(src),
                            Arg::I64(numel(&xs) as i64),
                            Arg::Walk(walk),
                        ],
                    ),
                ]
            }
            Op::MatMul => {
                let f64 = float("matmul")?;
                let r = shape.len();
                let (m, nn) = (shape[r - 2], shape[r - 1]);
                let k = self.shape(node.inputs[0])[r - 1];
                let (a, ta) = self.mat_operand(node.inputs[0])?;
                let (mut b, mut tb) = self.mat_operand(node.inputs[1])?;
                let out = self.write(id)?;
                let batch = numel(&shape[..r - 2]);
                let mut pre = Vec::new();
                if self.transposed_right.contains(&id) && k > 0 {
                    let bt = self.scratch(0, batch * k * nn * dt.size_bytes())?;
                    let (name, grid) = self.transpose_kernel(dt, batch, k, nn);
                    pre.push(Kernel::Launch {
                        func: Func::Planned(name),
                        f: None,
                        grid,
                        block: BLOCK,
                        args: vec![Arg::Slot(bt), Arg::Slot(b)],
                    });
                    (b, tb) = (bt, true);
                }
                if k == 0 {
                    // an empty sum: zeros
                    vec![elementwise(
                        format!("fill_{}", sfx(dt)),
                        n,
                        vec![Arg::Slot(out), Arg::I64(n as i64), Arg::F64(0.0)],
                    )]
                } else {
                    pre.push(Kernel::Gemm(Gemm {
                        f64,
                        a,
                        b,
                        out,
                        m,
                        n: nn,
                        k,
                        batch,
                        ta,
                        tb,
                        stride_a: m * k,
                        stride_b: k * nn,
                    }));
                    pre
                }
            }
            Op::Conv(p) => {
                float("conv")?;
                match p.kind {
                    lamina_core::ConvKind::Forward => return self.conv_forward(id, p),
                    lamina_core::ConvKind::InputGrad { .. } => return self.conv_grad(id, p, true),
                    lamina_core::ConvKind::KernelGrad { .. } => {
                        return self.conv_grad(id, p, false)
                    }
                }
            }
            Op::Gather { axis } => {
                let (pre, dim, post) = split(xshape(self), *axis);
                let k = self.len(node.inputs[1]);
                let src = self.read(node.inputs[0])?;
                let idx = self.read(node.inputs[1])?;
                let out = self.write(id)?;
                vec![elementwise(
                    format!("gather_{}", sfx(dt)),
                    n,
                    vec![
                        Arg::Slot(out),
                        Arg::Slot(src),
                        Arg::Slot(idx),
                        Arg::I64(pre as i64),
                        Arg::I64(dim as i64),
                        Arg::I64(post as i64),
                        Arg::I64(k as i64),
                    ],
                )]
            }
            Op::ScatterAdd { axis, dim_size } => {
                if dt == DType::Bool {
                    return Err(cuda_err(format!(
                        "%{id}: scatter_add of bool is not defined"
                    )));
                }
                let us = xshape(self).to_vec();
                let ir = self.shape(node.inputs[1]).len();
                let k = self.len(node.inputs[1]);
                let (pre, post) = (numel(&us[..*axis]), numel(&us[axis + ir..]));
                let src = self.read(node.inputs[0])?;
                let idx = self.read(node.inputs[1])?;
                let out = self.write(id)?;
                vec![
                    elementwise(
                        format!("fill_{}", sfx(dt)),
                        n,
                        vec![Arg::Slot(out), Arg::I64(n as i64), Arg::F64(0.0)],
                    ),
                    elementwise(
                        format!("scatter_add_{}", sfx(dt)),
                        pre * k * post,
                        vec![
                            Arg::Slot(out),
                            Arg::Slot(src),
                            Arg::Slot(idx),
                            Arg::I64(pre as i64),
                            Arg::I64(*dim_size as i64),
                            Arg::I64(post as i64),
                            Arg::I64(k as i64),
                        ],
                    ),
                ]
            }
            Op::Assign { name } => {
                let Storage::State(ref stored) = self.plan.storage[id] else {
                    return Err(cuda_err(format!(
                        "%{id}: assign to \"{name}\" is not stored in its state buffer"
                    )));
                };
                if stored != name {
                    return Err(cuda_err(format!(
                        "%{id}: assign to \"{name}\" is stored in state \"{stored}\""
                    )));
                }
                // Resolve the source first: it reads the value from before this Assign.
                let src = self.read(node.inputs[0])?;
                self.assigned.insert(name.clone(), t);
                vec![Kernel::Copy {
                    src,
                    dst: id,
                    bytes: n * dt.size_bytes(),
                }]
            }
        })
    }

    fn copy(&mut self, id: NodeId, walk: Walk) -> Result<Vec<Kernel>> {
        let x = self.plan.graph.nodes[id].inputs[0];
        let src = self.read(x)?;
        let out = self.write(id)?;
        let n = self.len(id);
        Ok(vec![elementwise(
            format!("copy_{}", sfx(self.dtype(id))),
            n,
            vec![
                Arg::Slot(out),
                Arg::Slot(src),
                Arg::I64(n as i64),
                Arg::Walk(walk),
            ],
        )])
    }

    /// The kernel of a fusion group: elementwise `nodes` (and the expands they absorbed), storing
    /// `outputs`.
    fn fused(&mut self, nodes: &[NodeId], outputs: &[NodeId]) -> Result<Vec<Kernel>> {
        if outputs.is_empty() {
            return Ok(vec![]);
        }
        let absorbed = |b: &Self, m: NodeId| {
            matches!(b.op(m), Op::Expand { .. }) && b.plan.storage[m] == Storage::Inline
        };
        let members: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|&m| !absorbed(self, m))
            .collect();
        let Some(&first) = members.first() else {
            return Ok(vec![]);
        };
        let len = self.len(first);
        let mut params: Vec<(String, bool)> = Vec::new();
        let mut slot_args: Vec<usize> = Vec::new();
        let mut param_of: HashMap<usize, usize> = HashMap::new();
        let mut param = |slot: usize, ty: &str, write: bool, params: &mut Vec<(String, bool)>| {
            if !write {
                if let Some(&p) = param_of.get(&slot) {
                    return p;
                }
            }
            params.push((ty.to_string(), write));
            slot_args.push(slot);
            let p = params.len() - 1;
            if !write {
                param_of.insert(slot, p);
            }
            p
        };
        let mut loads: Vec<(String, Load)> = Vec::new();
        let mut load_of: HashMap<NodeId, usize> = HashMap::new();
        let mut lines = Vec::new();
        let mut stores = Vec::new();
        let mut pending_stores: Vec<(usize, NodeId)> = Vec::new();
        for &m in &members {
            let node = &self.plan.graph.nodes[m];
            if !node.op.kind().is_elementwise() {
                return Err(cuda_err(format!(
                    "fused step contains %{m} ({}), which is not elementwise",
                    node.op.name()
                )));
            }
            if numel(&node.ty.shape) != len {
                return Err(cuda_err(format!(
                    "fused step mixes shapes: %{m} is {}",
                    node.ty.describe()
                )));
            }
            let mut args = Vec::with_capacity(3);
            for &i in &node.inputs {
                if members.contains(&i) {
                    args.push(format!("v{i}"));
                    continue;
                }
                if let Some(&l) = load_of.get(&i) {
                    args.push(format!("s{l}"));
                    continue;
                }
                let dti = self.dtype(i);
                let cty = codegen::c_type(dti);
                let load = if nodes.contains(&i) && absorbed(self, i) {
                    let q = self.plan.graph.nodes[i].inputs[0];
                    if let Some(v) = self.splat(q) {
                        Load::Literal(codegen::literal(v, dti))
                    } else {
                        let slot = self.read(q)?;
                        let (qs, is) = (self.shape(q), self.shape(i));
                        if numel(qs) == 1 {
                            Load::Uniform {
                                param: param(slot, cty, false, &mut params),
                            }
                        } else if numel(qs) == len {
                            Load::Dense {
                                param: param(slot, cty, false, &mut params),
                            }
                        } else {
                            let st = broadcast_strides(qs, is);
                            Load::Broadcast {
                                param: param(slot, cty, false, &mut params),
                                dims: is.iter().copied().zip(st).collect(),
                            }
                        }
                    }
                } else {
                    if self.len(i) != len {
                        return Err(cuda_err(format!(
                            "fused operand %{i} has {} elements, the group {len}",
                            self.len(i)
                        )));
                    }
                    match self.splat(i) {
                        Some(v) => Load::Literal(codegen::literal(v, dti)),
                        None => {
                            let slot = self.read(i)?;
                            Load::Dense {
                                param: param(slot, cty, false, &mut params),
                            }
                        }
                    }
                };
                loads.push((cty.to_string(), load));
                load_of.insert(i, loads.len() - 1);
                args.push(format!("s{}", loads.len() - 1));
            }
            let arg_dt = node
                .inputs
                .get(if matches!(node.op, Op::Where) { 1 } else { 0 })
                .map(|&i| self.dtype(i))
                .unwrap_or(node.ty.dtype);
            let arity = match node.op {
                Op::Where => 3,
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::CmpLt | Op::CmpEq => 2,
                _ => 1,
            };
            if args.len() != arity {
                return Err(cuda_err(format!(
                    "%{m} ({}) has {} operands",
                    node.op.name(),
                    args.len()
                )));
            }
            let e = codegen::expr(&node.op, arg_dt, node.ty.dtype, &args)?;
            lines.push(format!(
                "const {} v{m} = {e};",
                codegen::c_type(node.ty.dtype)
            ));
            if outputs.contains(&m) {
                let out = self.write(m)?;
                pending_stores.push((out, m));
            }
        }
        for (out, m) in pending_stores {
            let p = param(out, codegen::c_type(self.dtype(m)), true, &mut params);
            stores.push((p, format!("v{m}")));
        }
        let idx = self.fused.len();
        self.fused.push(FusedText {
            name: format!("fused_{idx}"),
            params,
            loads,
            lines,
            stores,
        });
        let mut args = vec![Arg::I64(len as i64)];
        args.extend(slot_args.into_iter().map(Arg::Slot));
        Ok(vec![Kernel::Launch {
            func: Func::Fused(idx),
            f: None,
            // a 4-wide kernel needs a thread per 4 elements
            grid: grid_for(len.div_ceil(self.fused[idx].vector_width())),
            block: BLOCK,
            args,
        }])
    }
}
