//! Fewer launches: the step's device operations merged after they are built.
//!
//! - **Multi-tensor launches** (first). Fused groups and copies in a row that touch no common
//!   memory (the optimizer updates of every parameter, even with each one's small step-size group
//!   between them: the row is scheduled in waves of independent parts) become one kernel whose
//!   block ranges select the group, when together they have at least [`MULTI_MIN`] elements.
//! - **Segments.** Consecutive operations whose tensors are all small (at most
//!   [`segment_limit`] elements) become ONE kernel run by a single block of 1024 threads
//!   (`LAMINA_CUDA_SEGMENT_THREADS`): each operation a block-strided loop (fused groups through
//!   `FusedText::body_unrolled`, the generic kernels of `kernels.cu` called as their device
//!   templates, strided copies as constant index arithmetic, GEMMs of at most [`SEGMENT_MACS`]
//!   multiply-adds as `seg_gemm_tc` (TF32 tensor cores) or `seg_gemm_s`), with a
//!   `__syncthreads()` before an operation that depends on one since the last barrier. The
//!   operations between two barriers form a phase; a phase's loops run side by side on ranges of
//!   warps. Values that only one segment touches (and that are not step outputs) live in its
//!   shared memory instead of the arena, two of them sharing bytes only across a barrier. A
//!   training step's loss section (softmax cross-entropy, its gradient, the metric counters: some
//!   25 launches on a few hundred elements), its small dense layers and the small tails of each
//!   backward layer run as one launch.
//!
//! Both are built from the code the backend generates for each operation; nothing is specific to
//! one op pattern. `LAMINA_CUDA_SEGMENT=<elements>` changes the bound (0 turns both off),
//! `LAMINA_CUDA_SEGMENT_LOCAL=0` keeps every value in the arena, `LAMINA_CUDA_SEGMENT_TRACE=1`
//! makes each segment print the clock cycles of its phases.

use super::{Arg, Builder, Func, Gemm, Kernel, Walk, BLOCK, MAX_RANK};
use crate::codegen::c_type;
use lamina_core::{numel, DType, Storage};
use std::collections::HashMap;
use std::fmt::Write;

/// Default largest tensor (elements) an operation of a segment may touch. Larger ones run as
/// launches of many blocks: one block walking wide_mlp's 2048×10 loss took 56 µs in two
/// segments (H100, `lamina bench --model all`, alternating in one call: wide_mlp 1832 / 1809 µs
/// with 32768, 1789 / 1789 with 16384, 1822 / 1811 with 8192; in another, 16384 against 32768:
/// 1830 / 1830 / 1818 against 1859 / 1840 / 1850; the other models the same within 1 µs).
const SEGMENT_ELEMS: usize = 16384;
/// Threads of the one block that runs a segment.
const SEGMENT_THREADS: u32 = 1024;

/// [`SEGMENT_THREADS`], or `LAMINA_CUDA_SEGMENT_THREADS` when it is 128, 256, 512 or 1024 (the
/// block reductions need a power of two).
fn segment_threads() -> u32 {
    std::env::var("LAMINA_CUDA_SEGMENT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|t| [128, 256, 512, 1024].contains(t))
        .unwrap_or(SEGMENT_THREADS)
}

/// Elements a thread of a segment takes per iteration of an elementwise loop, all loaded before
/// any is stored: one block has few threads, so each iteration's memory round trip (~0.3 µs
/// from L2) is paid `UNROLL` times less often.
const UNROLL: usize = 4;

/// Most bytes of dynamic shared memory a segment keeps its local values in.
const LOCAL_BYTES: usize = 64 << 10;

/// Bytes of shared memory a segment's GEMM stages its operands in.
const GEMM_SHARED: usize = 64 << 10;

/// Default least elements a wave of independent parts (the optimizer updates) needs to be a
/// multi-tensor launch rather than a phase of a segment: one block takes a memory round trip per
/// four elements a thread, many blocks one (bn_mlp's updates took ~6 µs as a segment phase; as one
/// launch its step was 5-6 µs shorter, H200). `LAMINA_CUDA_MULTI_MIN` changes it.
const MULTI_MIN: usize = 4096;

/// Default largest GEMM (multiply-adds) a segment takes; larger ones go to cuBLAS. A segment is
/// one SM, and what bounds a GEMM there is less the arithmetic than pulling its operands in from
/// L2 through that one SM (a 32 kB weight: ~2 µs): bn_mlp's 64×128 layers run faster as cuBLAS
/// launches, the 10-output classifiers faster inside (H200, PERF.md).
const SEGMENT_MACS: usize = 1 << 16;

/// [`SEGMENT_MACS`], or `LAMINA_CUDA_SEGMENT_MACS` when set (0: no GEMM in segments).
fn segment_macs() -> usize {
    std::env::var("LAMINA_CUDA_SEGMENT_MACS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEGMENT_MACS)
}

/// True when a GEMM of these sizes runs inside a segment: its operands and result are each at
/// most [`segment_limit`] elements and it has at most [`segment_macs`] multiply-adds. (Such a
/// dense layer keeps its plain GEMM and bias group instead of a cuBLASLt epilogue, so the whole
/// layer joins the segment.)
pub(super) fn segment_takes_gemm(batch: usize, m: usize, n: usize, k: usize) -> bool {
    let limit = segment_limit();
    let elems = (m * k).max(k * n).max(m * n) * batch;
    limit > 0 && elems <= limit && batch * m * n * k <= segment_macs()
}

/// The bound of [`SEGMENT_ELEMS`], or `LAMINA_CUDA_SEGMENT` when set.
pub(super) fn segment_limit() -> usize {
    std::env::var("LAMINA_CUDA_SEGMENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEGMENT_ELEMS)
}

/// The memory behind a slot, for telling whether two operations may run side by side.
#[derive(Clone, Debug, PartialEq)]
enum Mem {
    Range(usize, usize),
    State(String),
    /// Inputs and constants: never written by a step.
    ReadOnly,
    /// A buffer of its own (a state snapshot).
    Own(usize),
    /// Bytes of a segment's shared memory (a value only that segment reads and writes).
    Local(usize, usize),
}

#[derive(Clone, Debug)]
struct SlotInfo {
    dtype: DType,
    elems: usize,
    mem: Mem,
}

fn overlaps(a: &Mem, b: &Mem) -> bool {
    match (a, b) {
        (Mem::Range(o1, e1), Mem::Range(o2, e2)) => o1 < e2 && o2 < e1,
        (Mem::State(x), Mem::State(y)) => x == y,
        (Mem::Own(x), Mem::Own(y)) => x == y,
        (Mem::Local(o1, e1), Mem::Local(o2, e2)) => o1 < e2 && o2 < e1,
        _ => false,
    }
}

/// One operation as code for a merged kernel.
struct Part {
    /// The code, with slots as `q<slot>` placeholders resolved when the kernel is written.
    code: String,
    slots: Vec<usize>,
    reads: Vec<usize>,
    writes: Vec<usize>,
    /// Largest tensor touched, in elements.
    elems: usize,
    /// Blocks of `BLOCK` threads this part takes in a multi-tensor launch (0: it cannot be one).
    grid: u32,
    /// Bytes of the segment's shared scratch (`seg_sh`) the part uses.
    shared: usize,
    /// What the part is, for `LAMINA_CUDA_SEGMENT_TRACE`.
    label: String,
    /// Its code is one loop over `i0`, `step` with no barrier inside, so a range of a segment's
    /// threads may run it beside other parts.
    splittable: bool,
}

impl Builder<'_> {
    fn slot_info(&self, slot: usize) -> Option<SlotInfo> {
        let g = &self.plan.graph;
        if let Some(&(dtype, elems)) = self.mapped_out.get(&slot) {
            // an output's place in the turn's mapped host buffer
            return Some(SlotInfo {
                dtype,
                elems,
                mem: Mem::Own(slot),
            });
        }
        if slot < g.nodes.len() {
            let ty = &g.nodes[slot].ty;
            let mem = match &self.plan.storage[slot] {
                Storage::Arena { offset, bytes } => Mem::Range(*offset, offset + bytes),
                Storage::State(name) => Mem::State(name.clone()),
                Storage::Input(_) | Storage::Const => Mem::ReadOnly,
                Storage::View(_) | Storage::Inline => return None,
            };
            return Some(SlotInfo {
                dtype: ty.dtype,
                elems: numel(&ty.shape),
                mem,
            });
        }
        // a state snapshot (scratch buffers are not merged)
        let name = self.snap_of.iter().find(|(_, &s)| s == slot)?.0;
        let ty = &self.plan.states.iter().find(|(n, _)| n == name)?.1;
        Some(SlotInfo {
            dtype: ty.dtype,
            elems: numel(&ty.shape),
            mem: Mem::Own(slot),
        })
    }

    /// `k` as code for a merged kernel, the loop running over `i0`, `step` (`None`: it cannot be
    /// merged). `single_block` selects the reduction variants that suit one block.
    fn part(&self, k: &Kernel, i0: &str, step: &str, single_block: bool) -> Option<Part> {
        let q = |s: usize| format!("q{s}");
        match k {
            Kernel::Copy { src, dst, bytes } => {
                let (si, di) = (self.slot_info(*src)?, self.slot_info(*dst)?);
                let (word, ty) = if bytes % 4 == 0 {
                    (4, "unsigned")
                } else {
                    (1, "unsigned char")
                };
                let n = bytes / word;
                let code = if single_block {
                    // all loads of an iteration before its stores (see `UNROLL`)
                    format!(
                        "  for (long long ib = {i0}; ib < {n}ll; ib += {UNROLL}ll * {step}) {{\n    {ty} v[{UNROLL}];\n#pragma unroll\n    for (int j = 0; j < {UNROLL}; ++j) if (ib + j * {step} < {n}ll) v[j] = ((const {ty}*){})[ib + j * {step}];\n#pragma unroll\n    for (int j = 0; j < {UNROLL}; ++j) if (ib + j * {step} < {n}ll) (({ty}*){})[ib + j * {step}] = v[j];\n  }}\n",
                        q(*src),
                        q(*dst)
                    )
                } else {
                    format!(
                        "  for (long long i = {i0}; i < {n}ll; i += {step}) (({ty}*){})[i] = ((const {ty}*){})[i];\n",
                        q(*dst),
                        q(*src)
                    )
                };
                Some(Part {
                    code,
                    slots: vec![*src, *dst],
                    reads: vec![*src],
                    writes: vec![*dst],
                    elems: si.elems.max(di.elems),
                    grid: n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
                    shared: 0,
                    label: format!("copy {bytes} bytes"),
                    splittable: true,
                })
            }
            Kernel::Launch {
                func: Func::Fused(idx),
                args,
                ..
            } => {
                let f = &self.fused[*idx];
                let Some(Arg::I64(n)) = args.first() else {
                    return None;
                };
                let slots: Vec<usize> = args[1..]
                    .iter()
                    .map(|a| match a {
                        Arg::Slot(s) => Some(*s),
                        _ => None,
                    })
                    .collect::<Option<_>>()?;
                let mut elems = *n as usize;
                for &s in &slots {
                    elems = elems.max(self.slot_info(s)?.elems);
                }
                let (mut reads, mut writes) = (Vec::new(), Vec::new());
                for (s, (_, w)) in slots.iter().zip(&f.params) {
                    if *w {
                        writes.push(*s)
                    } else {
                        reads.push(*s)
                    }
                }
                let code = if single_block {
                    f.body_unrolled(i0, step, &format!("{n}ll"), &|k| q(slots[k]), UNROLL)
                } else {
                    f.body(i0, step, &format!("{n}ll"), &|k| q(slots[k]))
                };
                Some(Part {
                    code,
                    slots,
                    reads,
                    writes,
                    elems,
                    grid: (*n as usize).div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
                    shared: 0,
                    label: format!("{} n={n}", f.name),
                    splittable: true,
                })
            }
            Kernel::Launch {
                func: Func::Generic(name),
                args,
                ..
            } => {
                // the templates loop over the whole grid: a segment's one block; in a
                // multi-tensor launch only copies and fills (an expand stored for several
                // readers, a slice), written out with the part's loop
                if !single_block {
                    return self.multi_generic(name, args, i0, step);
                }
                let (base, sfx) = match name.as_str() {
                    "random_bits" => ("random_bits", "i32"),
                    _ => name.rsplit_once('_')?,
                };
                let ty = match sfx {
                    "f32" => "float",
                    "f64" => "double",
                    "i32" => "int",
                    "u8" => "unsigned char",
                    _ => return None,
                };
                // a strided copy with its walk as constant index arithmetic (a walk read from a
                // struct costs 64-bit divisions per element, which one block feels)
                if let (
                    "copy" | "scatter",
                    [Arg::Slot(out), Arg::Slot(src), Arg::I64(n), Arg::Walk(w)],
                ) = (base, &args[..])
                {
                    if *n < i32::MAX as i64 {
                        let (si, oi) = (self.slot_info(*src)?, self.slot_info(*out)?);
                        let at = walk_expr(w, "(unsigned)i");
                        let (load, store) = if base == "copy" {
                            (
                                format!("q{src}[{at}]"),
                                "q{out}[i]".replace("{out}", &out.to_string()),
                            )
                        } else {
                            (format!("q{src}[i]"), format!("q{out}[{at}]"))
                        };
                        let code = format!(
                            "  for (long long ib = {i0}; ib < {n}ll; ib += {UNROLL}ll * {step}) {{\n    {ty} v[{UNROLL}];\n#pragma unroll\n    for (int j = 0; j < {UNROLL}; ++j) {{ const long long i = ib + j * {step}; if (i < {n}ll) v[j] = {load}; }}\n#pragma unroll\n    for (int j = 0; j < {UNROLL}; ++j) {{ const long long i = ib + j * {step}; if (i < {n}ll) {store} = v[j]; }}\n  }}\n"
                        );
                        return Some(Part {
                            code,
                            slots: vec![*out, *src],
                            reads: vec![*src],
                            writes: vec![*out],
                            elems: si.elems.max(oi.elems),
                            grid: 0,
                            shared: 0,
                            label: format!("{name} n={n}"),
                            splittable: true,
                        });
                    }
                }
                let call = match base {
                    "copy" | "scatter" | "fill" | "gather" | "iota" | "argmax" | "scatter_add" => {
                        format!("{base}_t<{ty}>")
                    }
                    "random_bits" => "random_bits_t".to_string(),
                    "reduce_sum_thread" | "reduce_sum_block" | "reduce_sum_cols"
                    | "reduce_max_thread" | "reduce_max_block" | "reduce_max_cols" => {
                        // (out, src, n_out, n_red, keep, red): one block walks every output
                        let (Some(Arg::I64(n_out)), Some(Arg::I64(n_red))) =
                            (args.get(2), args.get(3))
                        else {
                            return None;
                        };
                        let variant = if *n_red <= 64 || *n_out >= 128 {
                            "thread"
                        } else {
                            "block"
                        };
                        format!("{}_{variant}<{ty}>", &base[..10])
                    }
                    _ => return None,
                };
                let mut code = String::from("  {\n");
                let mut vals = Vec::new();
                let (mut slots, mut elems) = (Vec::new(), 0);
                for (j, a) in args.iter().enumerate() {
                    vals.push(match a {
                        Arg::Slot(s) => {
                            elems = elems.max(self.slot_info(*s)?.elems);
                            slots.push(*s);
                            q(*s)
                        }
                        Arg::I64(v) => format!("{v}ll"),
                        Arg::U32(v) => format!("{v}u"),
                        Arg::F64(v) => format!(
                            "from_f64_{sfx}(__longlong_as_double(0x{:016x}ll))",
                            v.to_bits()
                        ),
                        Arg::Walk(w) => {
                            let _ = writeln!(code, "    const Walk w{j} = {};", walk_text(w));
                            format!("w{j}")
                        }
                        Arg::Conv(_) => return None,
                    });
                }
                let _ = writeln!(code, "    {call}({});\n  }}", vals.join(", "));
                // the first argument is the output of every kernel listed above
                let writes = slots.first().copied().into_iter().collect();
                Some(Part {
                    code,
                    reads: slots.iter().skip(1).copied().collect(),
                    writes,
                    slots,
                    elems,
                    grid: 0,
                    shared: 0,
                    label: format!("{name} elems={elems}"),
                    splittable: false,
                })
            }
            Kernel::Gemm(g) if single_block => self.gemm_part(g),
            Kernel::Launch { .. } | Kernel::Gemm(_) | Kernel::Lt(_) => None,
        }
    }

    /// A small GEMM as a segment part (`seg_gemm_tc` or `seg_gemm_s` of `kernels.cu`, sizes and
    /// strides as template constants).
    fn gemm_part(&self, g: &Gemm) -> Option<Part> {
        if !segment_takes_gemm(g.batch, g.m, g.n, g.k) {
            return None;
        }
        let mut elems = 0;
        for s in [g.a, g.b, g.out] {
            elems = elems.max(self.slot_info(s)?.elems);
        }
        let (ty, size) = if g.f64 { ("double", 8) } else { ("float", 4) };
        let (m, n, k) = (g.m, g.n, g.k);
        // strides of A's (m, k) and B's (k, n) elements
        let (am, ak) = if g.ta { (1, m) } else { (k, 1) };
        let (bk, bn) = if g.tb { (1, k) } else { (n, 1) };
        let (sa, sb) = (g.stride_a, g.stride_b);
        let (a, b, c) = (g.a, g.b, g.out);
        let consts = format!(
            "{}ll, {m}, {n}, {k}, {sa}ll, {am}ll, {ak}ll, {sb}ll, {bk}ll, {bn}ll",
            g.batch
        );
        let label = format!("gemm b{} {m}x{n}x{k} ta={} tb={}", g.batch, g.ta, g.tb);
        // f32 under TF32 on the tensor cores, f64 and strict f32 on the CUDA cores
        let (code, shared) = if !g.f64 && self.dev.tf32 {
            // tensor cores: the narrowest warp band (8·WN columns) whose bands fit the warps
            let warps = (segment_threads() / 32) as usize;
            let bands = |wn: usize| m.div_ceil(16) * n.div_ceil(8 * wn);
            let wn = [1, 2, 4, 8].into_iter().find(|&w| bands(w) <= warps)?;
            let wn = if wn < 4 && n >= 32 && bands(4) <= warps {
                4
            } else {
                wn
            };
            let wt = bands(wn);
            let (mp, np) = (m.div_ceil(16) * 16, n.div_ceil(8 * wn) * 8 * wn);
            // the chunk layouts of `SegTc` in kernels.cu: an operand whose contiguous axis is k
            // as rows of `ld`, another k-major with row stride ≡ 8 (mod 32)
            let (arow, brow) = (ak == 1 && am != 1, bk == 1 && bn != 1);
            let stride = |p: usize| (p + 23) / 32 * 32 + 8;
            let (ms, ns) = (stride(mp), stride(np));
            let floats = |kc: usize| {
                let ld = (kc + 27) / 32 * 32 + 4;
                let a = if arow { mp * ld } else { kc * ms };
                let b = if brow { np * ld } else { kc * ns };
                a + b
            };
            let budget = GEMM_SHARED / 4;
            let mut fit = k.div_ceil(8) * 8;
            while fit > 8 && floats(fit) > budget {
                fit -= 8;
            }
            let kc = k.div_ceil(k.div_ceil(fit)).div_ceil(8) * 8;
            let mut kg = 1;
            while wt * kg * 2 <= warps && kg * 2 * 8 <= kc && kg * 2 * mp * np <= budget {
                kg *= 2;
            }
            (
                format!(
                    "  seg_gemm_tc<{consts}, {kc}, {wn}, {kg}>(q{c}, q{a}, q{b}, (float*)seg_sh);\n"
                ),
                floats(kc).max(kg * mp * np) * 4,
            )
        } else {
            // one block: operands staged in shared memory, RM × RN outputs a thread, groups of
            // threads splitting k when the tiles leave threads idle
            let threads = segment_threads() as usize;
            let tiles = |(rm, rn): (usize, usize)| m.div_ceil(rm) * n.div_ceil(rn);
            // the largest micro-tile that still gives at least 4 warps work
            let (rm, rn) = [(4, 4), (4, 2), (2, 2), (2, 1), (1, 1)]
                .into_iter()
                .find(|&t| tiles(t) >= 128)
                .unwrap_or((1, 1));
            let t = tiles((rm, rn));
            let outs = t * rm * rn;
            let pad4 = |x: usize| x.div_ceil(4) * 4;
            let mut kg = 1;
            while kg * 2 * t <= threads && kg * 2 * outs * size <= GEMM_SHARED && kg * 2 <= k {
                kg *= 2;
            }
            let (ms, ns) = (pad4(m.div_ceil(rm) * rm), pad4(n.div_ceil(rn) * rn));
            let kc_max = (GEMM_SHARED / ((ms + ns) * size)).max(4) / 4 * 4;
            let kc = pad4(k.div_ceil(k.div_ceil(kc_max)));
            if t > threads {
                return None;
            }
            (
                format!(
                    "  seg_gemm_s<{ty}, {consts}, {kc}, {rm}, {rn}, {kg}>(q{c}, q{a}, q{b}, ({ty}*)seg_sh);\n"
                ),
                (kc * (ms + ns)).max(kg * outs) * size,
            )
        };
        Some(Part {
            code,
            slots: vec![a, b, c],
            reads: vec![a, b],
            writes: vec![c],
            elems,
            grid: 0,
            shared,
            label,
            splittable: false,
        })
    }

    /// A small strided copy or fill (an expand stored for several readers, a slice of the
    /// optimizer's step scalars) as a multi-tensor part.
    fn multi_generic(&self, name: &str, args: &[Arg], i0: &str, step: &str) -> Option<Part> {
        let (base, sfx) = name.rsplit_once('_')?;
        let slot = |a: Option<&Arg>| match a {
            Some(Arg::Slot(s)) => Some(*s),
            _ => None,
        };
        let out = slot(args.first())?;
        let (n, reads, value, walk) = match (base, args) {
            ("copy", [_, Arg::Slot(src), Arg::I64(n), Arg::Walk(w)]) => (
                *n,
                vec![*src],
                format!("q{src}[walk_at(w, i)]"),
                format!("  const Walk w = {};\n", walk_text(w)),
            ),
            ("fill", [_, Arg::I64(n), Arg::F64(v)]) => (
                *n,
                vec![],
                format!(
                    "from_f64_{sfx}(__longlong_as_double(0x{:016x}ll))",
                    v.to_bits()
                ),
                String::new(),
            ),
            _ => return None,
        };
        let mut elems = n as usize;
        for &s in reads.iter().chain([&out]) {
            elems = elems.max(self.slot_info(s)?.elems);
        }
        // Large ones (a transpose before a GEMM) stay kernels of their own: inside a multi-tensor
        // kernel the walk is a local array, and two 4096×4096 transposes of wide_mlp took 537 µs
        // there against 2 × 72 µs alone (H200).
        if elems > segment_limit() {
            return None;
        }
        let code = format!(
            "  {{\n{walk}  for (long long i = {i0}; i < {n}ll; i += {step}) q{out}[i] = {value};\n  }}\n"
        );
        let mut slots = reads.clone();
        slots.push(out);
        Some(Part {
            code,
            slots,
            reads,
            writes: vec![out],
            elems,
            grid: (n as usize).div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
            shared: 0,
            label: format!("{name} n={n}"),
            splittable: true,
        })
    }

    /// True when GEMM `y` may run beside GEMM `x` (neither reads or writes memory the other
    /// writes).
    pub(super) fn independent_gemms(&self, x: &Gemm, y: &Gemm) -> bool {
        let mems = |s: &[usize]| -> Option<Vec<Mem>> {
            s.iter()
                .map(|&v| self.slot_info(v).map(|i| i.mem))
                .collect()
        };
        let (Some(xr), Some(xw), Some(yr), Some(yw)) = (
            mems(&[x.a, x.b]),
            mems(&[x.out]),
            mems(&[y.a, y.b]),
            mems(&[y.out]),
        ) else {
            return false;
        };
        !depends(&yr, &yw, &xr, &xw)
    }

    /// Merges runs of `kernels` into segments and multi-tensor launches; returns the new list and
    /// the name and CUDA C of each merged kernel.
    pub(super) fn merge(
        &self,
        kernels: Vec<Kernel>,
        outputs: &[usize],
    ) -> (Vec<Kernel>, Vec<(String, String)>) {
        let limit = segment_limit();
        let mut src = Vec::new();
        if limit == 0 {
            return (kernels, src);
        }
        let kernels = self.merge_multi(kernels, limit, &mut src);
        let kernels = self.merge_segments(kernels, limit, outputs, &mut src);
        (kernels, src)
    }

    /// The kernel text of merged parts: parameters are the slots, each a typed pointer.
    /// The parts of one phase (no barrier between them, so no part reads what another writes):
    /// those that need the whole block first, then the others side by side, each on a range of
    /// warps sized by its elements, so their memory round trips overlap instead of adding up
    /// (the optimizer updates of all parameters in one phase take about as long as the largest).
    fn phase_parts(&self, phase: Vec<(Kernel, Part)>, threads: u32) -> Vec<(Part, String)> {
        let warps = (threads / 32) as usize;
        let (split, whole): (Vec<_>, Vec<_>) = phase.into_iter().partition(|(_, p)| p.splittable);
        let mut out: Vec<(Part, String)> =
            whole.into_iter().map(|(_, p)| (p, String::new())).collect();
        if split.len() < 2 || split.len() > warps {
            out.extend(split.into_iter().map(|(_, p)| (p, String::new())));
            return out;
        }
        let elems: Vec<usize> = split.iter().map(|(_, p)| p.elems).collect();
        let share = warp_shares(&elems, warps);
        let mut t0 = 0;
        for ((k, p), w) in split.into_iter().zip(share) {
            let t1 = t0 + 32 * w;
            let i0 = format!("((long long)threadIdx.x - {t0})");
            let step = format!("{}ll", t1 - t0);
            match self.part(&k, &i0, &step, true) {
                Some(mut q) => {
                    q.code = format!(
                        "  if (threadIdx.x >= {t0}u && threadIdx.x < {t1}u) {{\n{}  }}\n",
                        q.code
                    );
                    out.push((q, String::new()));
                }
                // the same kernel gave a part before; keep it whole if not
                None => out.push((p, String::new())),
            }
            t0 = t1;
        }
        out
    }

    /// Slots in `local` are not parameters: they point into the kernel's dynamic shared memory
    /// at the given byte offsets; the GEMMs' staging area (`seg_sh`) starts at `staging_at`.
    fn kernel_text(
        &self,
        name: &str,
        bounds: &str,
        parts: &[(Part, String)],
        local: &HashMap<usize, usize>,
        staging_at: usize,
    ) -> (String, Vec<Arg>) {
        let mut slots: Vec<usize> = Vec::new();
        for (p, _) in parts {
            for &s in &p.slots {
                if !slots.contains(&s) && !local.contains_key(&s) {
                    slots.push(s);
                }
            }
        }
        let params: Vec<String> = slots
            .iter()
            .map(|&s| {
                let dt = self.slot_info(s).map_or(DType::F32, |i| i.dtype);
                format!("{}* q{s}", c_type(dt))
            })
            .collect();
        let mut s = format!(
            "extern \"C\" __global__ void {bounds} {name}({}) {{\n",
            params.join(", ")
        );
        let shared = parts.iter().map(|(p, _)| p.shared).max().unwrap_or(0);
        if shared > 0 || !local.is_empty() {
            s.push_str("  extern __shared__ __align__(16) unsigned char seg_dyn[];\n");
        }
        if shared > 0 {
            // the GEMMs' staging area, after the local values
            let _ = writeln!(s, "  unsigned char* const seg_sh = seg_dyn + {staging_at};");
        }
        if !local.is_empty() {
            let mut local: Vec<(&usize, &usize)> = local.iter().collect();
            local.sort();
            for (&slot, &off) in local {
                let dt = self.slot_info(slot).map_or(DType::F32, |i| i.dtype);
                let ty = c_type(dt);
                let _ = writeln!(s, "  {ty}* const q{slot} = ({ty}*)(seg_dyn + {off});");
            }
        }
        for (p, sep) in parts {
            s.push_str(&p.code);
            s.push_str(sep);
        }
        s.push_str("}\n");
        (s, slots.into_iter().map(Arg::Slot).collect())
    }

    fn merge_segments(
        &self,
        kernels: Vec<Kernel>,
        limit: usize,
        outputs: &[usize],
        src: &mut Vec<(String, String)>,
    ) -> Vec<Kernel> {
        let (i0, step) = ("(long long)threadIdx.x", "(long long)blockDim.x");
        let mut parts: Vec<Option<Part>> = kernels
            .iter()
            .map(|k| self.part(k, i0, step, true).filter(|p| p.elems <= limit))
            .collect();
        // how many launches touch each slot: a value that only one segment touches may live in
        // that segment's shared memory
        let mut uses: HashMap<usize, usize> = HashMap::new();
        for k in &kernels {
            for s in kernel_slots(k) {
                *uses.entry(s).or_default() += 1;
            }
        }
        let mut kernels: Vec<Option<Kernel>> = kernels.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(kernels.len());
        let mut j = 0;
        while j < kernels.len() {
            let start = j;
            while j < kernels.len() && parts[j].is_some() {
                j += 1;
            }
            if j - start >= 2 {
                let run: Vec<(Kernel, Part)> = (start..j)
                    .map(|i| {
                        (
                            kernels[i].take().expect("once"),
                            parts[i].take().expect("once"),
                        )
                    })
                    .collect();
                out.push(self.segment(run, &uses, outputs, src));
            } else {
                out.extend((start..j).map(|i| kernels[i].take().expect("once")));
            }
            if j < kernels.len() {
                out.push(kernels[j].take().expect("once"));
                j += 1;
            }
        }
        out
    }

    /// One segment of `run` (two or more parts): its values that no other launch touches and
    /// that are not step outputs live in the kernel's shared memory (`LAMINA_CUDA_SEGMENT_LOCAL=0`
    /// keeps them in the arena), placed so that two values share bytes only across a barrier.
    fn segment(
        &self,
        run: Vec<(Kernel, Part)>,
        uses: &HashMap<usize, usize>,
        outputs: &[usize],
        src: &mut Vec<(String, String)>,
    ) -> Kernel {
        let threads = segment_threads();
        // `LAMINA_CUDA_SEGMENT_TRACE=1`: each segment prints the clock cycles of each phase
        let trace = std::env::var("LAMINA_CUDA_SEGMENT_TRACE").as_deref() == Ok("1");
        let (barrier_text, bounds) = (
            "  __syncthreads();\n",
            format!("__launch_bounds__({threads})"),
        );
        let name = format!("segment_{}", src.len());
        let mem_of = |x: usize| self.slot_info(x).map_or(Mem::Own(x), |i| i.mem);
        let rw_of = |local: &HashMap<usize, (usize, usize)>| -> Vec<(Vec<Mem>, Vec<Mem>)> {
            let mems = |s: &[usize]| -> Vec<Mem> {
                s.iter()
                    .map(|x| match local.get(x) {
                        Some(&(o, e)) => Mem::Local(o, e),
                        None => mem_of(*x),
                    })
                    .collect()
            };
            run.iter()
                .map(|(_, p)| (mems(&p.reads), mems(&p.writes)))
                .collect()
        };
        let mut local: HashMap<usize, (usize, usize)> = HashMap::new();
        if std::env::var("LAMINA_CUDA_SEGMENT_LOCAL").as_deref() != Ok("0") {
            let barrier = barriers_of(&rw_of(&local));
            let mut phase = Vec::with_capacity(run.len());
            let mut ph = 0;
            for b in &barrier {
                ph += usize::from(*b);
                phase.push(ph);
            }
            let mut in_run: HashMap<usize, usize> = HashMap::new();
            let mut span: Vec<(usize, usize, usize)> = Vec::new(); // slot, first, last phase
            for (j, (k, p)) in run.iter().enumerate() {
                for s in kernel_slots(k) {
                    *in_run.entry(s).or_default() += 1;
                }
                for &s in &p.slots {
                    match span.iter_mut().find(|t| t.0 == s) {
                        Some(t) => t.2 = phase[j],
                        None => span.push((s, phase[j], phase[j])),
                    }
                }
            }
            let written: Vec<usize> = run.iter().flat_map(|(_, p)| p.writes.clone()).collect();
            // (slot, bytes, first phase, last phase) of the values only this segment touches
            let values: Vec<(usize, usize, usize, usize)> = span
                .iter()
                .filter_map(|&(s, first, last)| {
                    let info = self.slot_info(s)?;
                    let only_here = matches!(info.mem, Mem::Range(..))
                        && written.contains(&s)
                        && !outputs.contains(&s)
                        && uses.get(&s) == in_run.get(&s);
                    let bytes = (info.elems * info.dtype.size_bytes()).div_ceil(16) * 16;
                    only_here.then_some((s, bytes, first, last))
                })
                .collect();
            let lives: Vec<(usize, usize, usize)> =
                values.iter().map(|v| (v.1, v.2, v.3)).collect();
            for (v, at) in values.iter().zip(place_locals(&lives, LOCAL_BYTES)) {
                if let Some(at) = at {
                    local.insert(v.0, (at, at + v.1));
                }
            }
        }
        let staging = run.iter().map(|(_, p)| p.shared).max().unwrap_or(0);
        let staging_at = local.values().map(|v| v.1).max().unwrap_or(0);
        let dynamic = staging_at + staging;
        // barriers again: values in shared memory no longer share arena bytes with others
        let barrier = barriers_of(&rw_of(&local));
        let mut phases: Vec<Vec<(Kernel, Part)>> = Vec::new();
        for (j, kp) in run.into_iter().enumerate() {
            if j == 0 || barrier[j] {
                phases.push(Vec::new());
            }
            phases.last_mut().expect("pushed").push(kp);
        }
        let count = phases.len();
        let mut parts: Vec<(Part, String)> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for (ph, phase) in phases.into_iter().enumerate() {
            labels.push(
                phase
                    .iter()
                    .map(|(_, p)| p.label.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            for (p, sep) in self.phase_parts(phase, threads) {
                parts.push((p, sep));
            }
            let last = &mut parts.last_mut().expect("a phase has parts").1;
            if ph + 1 < count {
                last.push_str(barrier_text);
            }
            if trace {
                let _ = writeln!(last, "  if (seg_t0) seg_t[{}] = clock64();", ph + 1);
            }
        }
        if trace {
            // clock of block 0's thread 0 after each phase (and its barrier), printed at the end
            let mut head = format!(
                "  __shared__ long long seg_t[{}];\n  const bool seg_t0 = blockIdx.x == 0 && threadIdx.x == 0;\n  if (seg_t0) seg_t[0] = clock64();\n",
                count + 1
            );
            head.push_str(&parts[0].0.code);
            parts[0].0.code = head;
            let mut tail = String::from("  if (seg_t0) {\n");
            for (j, label) in labels.iter().enumerate() {
                let label = label.replace(['"', '%', '\\'], "_");
                let _ = writeln!(
                    tail,
                    "    printf(\"trace {name} %d %lld {label}\\n\", {j}, seg_t[{}] - seg_t[{j}]);",
                    j + 1
                );
            }
            tail.push_str("  }\n");
            parts.last_mut().expect("parts").1.push_str(&tail);
        }
        let offsets: HashMap<usize, usize> = local.iter().map(|(&s, v)| (s, v.0)).collect();
        let (text, args) = self.kernel_text(&name, &bounds, &parts, &offsets, staging_at);
        src.push((name.clone(), text));
        Kernel::Launch {
            func: Func::Merged(name, dynamic as u32),
            f: None,
            grid: 1,
            block: threads,
            args,
        }
    }

    /// Multi-tensor launches. A window of consecutive fused groups and copies is scheduled in
    /// waves: a part goes one wave after the last earlier part it depends on (one writes memory
    /// the other reads or writes), so parts that touch no common memory share a wave even when a
    /// dependent part stood between them (each optimizer update after the small group computing
    /// its step size). A wave of two or more parts, larger together than a segment takes, is one
    /// launch; the other parts stay as they were, in wave order, for the segments.
    fn merge_multi(
        &self,
        kernels: Vec<Kernel>,
        limit: usize,
        src: &mut Vec<(String, String)>,
    ) -> Vec<Kernel> {
        let mut out = Vec::with_capacity(kernels.len());
        let mut window: Vec<(Kernel, Part)> = Vec::new();
        for k in kernels {
            // the part's loop runs over its own block range (`b` and `gs`, set around it)
            let i0 = format!("(long long)b * {BLOCK} + threadIdx.x");
            match self.part(&k, &i0, "gs", false).filter(|p| p.grid > 0) {
                Some(p) => window.push((k, p)),
                None => {
                    self.schedule_waves(std::mem::take(&mut window), limit, &mut out, src);
                    out.push(k);
                }
            }
        }
        self.schedule_waves(window, limit, &mut out, src);
        out
    }

    fn schedule_waves(
        &self,
        window: Vec<(Kernel, Part)>,
        limit: usize,
        out: &mut Vec<Kernel>,
        src: &mut Vec<(String, String)>,
    ) {
        let mems = |s: &[usize]| -> Vec<Mem> {
            s.iter()
                .map(|&x| self.slot_info(x).map_or(Mem::Own(x), |i| i.mem))
                .collect()
        };
        let rw: Vec<(Vec<Mem>, Vec<Mem>)> = window
            .iter()
            .map(|(_, p)| (mems(&p.reads), mems(&p.writes)))
            .collect();
        let wave = waves_of(&rw);
        let waves = wave.iter().max().map_or(0, |w| w + 1);
        let mut slots: Vec<Option<(Kernel, Part)>> = window.into_iter().map(Some).collect();
        for w in 0..waves {
            let mut run: Vec<(Kernel, Part)> = (0..slots.len())
                .filter(|&j| wave[j] == w)
                .filter_map(|j| slots[j].take())
                .collect();
            let blocks: u64 = run.iter().map(|(_, p)| p.grid as u64).sum();
            let elems: usize = run.iter().map(|(_, p)| p.elems).sum();
            // small waves are left to segments (a dependent neighbour may follow)
            let least = std::env::var("LAMINA_CUDA_MULTI_MIN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(MULTI_MIN.min(limit));
            if run.len() < 2 || elems <= least || blocks >= 1 << 30 {
                out.extend(run.into_iter().map(|(k, _)| k));
                continue;
            }
            let name = format!("multi_{}", src.len());
            let mut first = 0u32;
            let parts: Vec<(Part, String)> = run
                .drain(..)
                .map(|(_, mut p)| {
                    let (b0, g) = (first, p.grid);
                    first += g;
                    p.code = format!(
                        "  if (blockIdx.x - {b0}u < {g}u) {{\n  const unsigned b = blockIdx.x - {b0}u;\n  const long long gs = (long long){g} * {BLOCK};\n{}  }}\n",
                        p.code
                    );
                    (p, String::new())
                })
                .collect();
            let (text, args) = self.kernel_text(&name, "", &parts, &HashMap::new(), 0);
            src.push((name.clone(), text));
            out.push(Kernel::Launch {
                func: Func::Merged(name, 0),
                f: None,
                grid: first,
                block: BLOCK,
                args,
            });
        }
    }
}

/// Places a segment's local values, given as (bytes, first phase, last phase) in order of first
/// phase: each at the lowest offset clear of every placed value still live in its first phase
/// (`None` when that would end past `limit`). Two values share bytes only when one's last phase
/// comes before the other's first, that is across a barrier.
fn place_locals(values: &[(usize, usize, usize)], limit: usize) -> Vec<Option<usize>> {
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // offset, end, last phase
    values
        .iter()
        .map(|&(bytes, first, last)| {
            let mut at = 0;
            while let Some(end) = placed
                .iter()
                .filter(|p| p.2 >= first && p.0 < at + bytes && at < p.1)
                .map(|p| p.1)
                .max()
            {
                at = end;
            }
            (at + bytes <= limit).then(|| {
                placed.push((at, at + bytes, last));
                at
            })
        })
        .collect()
}

/// Warps of a block for parts of `elems` elements running side by side: each at least one, about
/// in proportion to its elements, all `warps` handed out (the rest to the largest part).
fn warp_shares(elems: &[usize], warps: usize) -> Vec<usize> {
    let total: usize = elems.iter().map(|&e| e.max(1)).sum();
    let mut share: Vec<usize> = elems
        .iter()
        .map(|&e| (warps * e.max(1) / total).max(1))
        .collect();
    while share.iter().sum::<usize>() > warps {
        let big = (0..share.len()).max_by_key(|&j| share[j]).expect("parts");
        share[big] -= 1;
    }
    let spare = warps - share.iter().sum::<usize>();
    let big = (0..share.len()).max_by_key(|&j| elems[j]).expect("parts");
    share[big] += spare;
    share
}

/// Every slot a launch reads or writes.
fn kernel_slots(k: &Kernel) -> Vec<usize> {
    let mut v = match k {
        Kernel::Launch { args, .. } => args
            .iter()
            .filter_map(|a| match a {
                Arg::Slot(s) => Some(*s),
                _ => None,
            })
            .collect(),
        Kernel::Gemm(g) => vec![g.a, g.b, g.out],
        Kernel::Lt(g) => g.slots().to_vec(),
        Kernel::Copy { src, dst, .. } => vec![*src, *dst],
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// True when an operation reading `pr` and writing `pw` must run after one reading `qr` and
/// writing `qw` that comes before it (read after write, write after read or write).
fn depends(pr: &[Mem], pw: &[Mem], qr: &[Mem], qw: &[Mem]) -> bool {
    pw.iter()
        .any(|a| qr.iter().chain(qw).any(|b| overlaps(a, b)))
        || pr.iter().any(|a| qw.iter().any(|b| overlaps(a, b)))
}

/// The wave of each operation (reads, writes) of a row: one after the last earlier operation it
/// depends on, so operations of one wave may run side by side and waves in order keep every
/// dependence.
fn waves_of(rw: &[(Vec<Mem>, Vec<Mem>)]) -> Vec<usize> {
    let mut wave = vec![0usize; rw.len()];
    for j in 0..rw.len() {
        for i in 0..j {
            if depends(&rw[j].0, &rw[j].1, &rw[i].0, &rw[i].1) {
                wave[j] = wave[j].max(wave[i] + 1);
            }
        }
    }
    wave
}

/// Where a segment needs a barrier: before an operation that depends on one since the last
/// barrier; independent neighbours share a phase.
fn barriers_of(rw: &[(Vec<Mem>, Vec<Mem>)]) -> Vec<bool> {
    let (mut read, mut written): (Vec<Mem>, Vec<Mem>) = (Vec::new(), Vec::new());
    let mut barrier = vec![false; rw.len()];
    for (j, (pr, pw)) in rw.iter().enumerate() {
        if depends(pr, pw, &read, &written) {
            barrier[j] = true;
            read.clear();
            written.clear();
        }
        read.extend(pr.iter().cloned());
        written.extend(pw.iter().cloned());
    }
    barrier
}

/// The source offset of flat index `u` (an unsigned 32-bit expression) under `w`, as constant
/// arithmetic: `offset + Σ_d ((u / inner_d) % shape_d) · stride_d`.
fn walk_expr(w: &Walk, u: &str) -> String {
    let mut terms = vec![format!("{}ll", w.offset)];
    let mut inner = 1i64;
    for d in (0..w.rank as usize).rev() {
        let (size, stride) = (w.shape[d], w.stride[d]);
        if size != 1 && stride != 0 {
            let q = if inner == 1 {
                u.to_string()
            } else {
                format!("({u} / {inner}u)")
            };
            // the outermost axis needs no remainder: u is below the walk's size
            let r = if d == 0 {
                q
            } else {
                format!("({q} % {size}u)")
            };
            terms.push(format!("(long long){r} * {stride}ll"));
        }
        inner *= size;
    }
    format!("({})", terms.join(" + "))
}

/// A `Walk` as a C aggregate.
fn walk_text(w: &Walk) -> String {
    let list = |v: &[i64; MAX_RANK]| {
        v.iter()
            .map(|x| format!("{x}ll"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{{{}ll, {{{}}}, {{{}}}, {}ll}}",
        w.rank,
        list(&w.shape),
        list(&w.stride),
        w.offset
    )
}

/// The part of `kernels.cu` a merged module needs: the walk, the accumulator rules and the
/// device templates of the generic kernels (not their instantiations).
pub(super) fn templates() -> &'static str {
    let src = crate::dev::GENERIC_SRC;
    let end = src.find("#define INST_ALL").unwrap_or(src.len());
    &src[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(o: usize, e: usize) -> Mem {
        Mem::Range(o, e)
    }
    fn st(n: &str) -> Mem {
        Mem::State(n.into())
    }

    /// Adam-like row: each update reads its step size, computed by a small group right before
    /// it into reused arena bytes; the updates share a wave after the step sizes, and an arena
    /// range reused by a later step size puts that one after the update that read it.
    #[test]
    fn waves_keep_every_dependence() {
        let rw = vec![
            (vec![st("hyper")], vec![r(0, 64)]), // step size 1
            (vec![r(0, 64), st("p1"), r(128, 512)], vec![st("p1")]), // update 1
            (vec![st("hyper")], vec![r(64, 128)]), // step size 2
            (vec![r(64, 128), st("p2")], vec![st("p2")]), // update 2
            (vec![st("hyper")], vec![r(0, 64)]), // step size 3 reuses 0..64
            (vec![r(0, 64), st("p3")], vec![st("p3")]), // update 3
            (vec![st("p1")], vec![r(1024, 1088)]), // reads p1 after its update
            (vec![st("p9")], vec![st("p9")]),    // independent of all
        ];
        assert_eq!(waves_of(&rw), vec![0, 1, 0, 1, 2, 3, 2, 0]);
    }

    #[test]
    fn barriers_only_before_dependent_operations() {
        let rw = vec![
            (vec![Mem::ReadOnly], vec![r(0, 64)]),    // a
            (vec![Mem::ReadOnly], vec![r(64, 128)]),  // b: independent of a
            (vec![r(0, 128)], vec![r(128, 192)]),     // reads a and b: barrier
            (vec![Mem::ReadOnly], vec![r(0, 32)]),    // overwrites what c read: barrier
            (vec![Mem::Own(3)], vec![st("s")]),       // independent
            (vec![st("s")], vec![Mem::Own(4)]),       // reads s: barrier
            (vec![Mem::ReadOnly], vec![Mem::Own(4)]), // writes what the last wrote: barrier
        ];
        assert_eq!(
            barriers_of(&rw),
            vec![false, false, true, true, false, true, true]
        );
    }

    /// The GEMM templates compile for sm_90 in the variants a segment emits: both staging
    /// layouts of each operand, batches, k split or not (needs NVRTC only; skipped where its
    /// library is absent). Their values are checked on the GPU (`tests/cuda/merged.rs`).
    #[test]
    fn gemm_templates_compile() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("NVRTC not found: skipped");
            return;
        }
        let mut src = format!("{}{}", crate::codegen::PRELUDE, templates());
        for (ty, t) in [("float", "f32"), ("double", "f64")] {
            src.push_str(&format!(
                "extern \"C\" __global__ void __launch_bounds__(1024) \
                 probe_{t}({ty}* c, const {ty}* a, const {ty}* b) {{\n\
                 extern __shared__ __align__(16) unsigned char seg_sh[];\n\
                 seg_gemm_s<{ty}, 1ll, 32, 128, 64, 0ll, 64ll, 1ll, 0ll, 128ll, 1ll, 32, 4, 4, 4>(c, a, b, ({ty}*)seg_sh);\n\
                 seg_gemm_s<{ty}, 2ll, 37, 29, 5, 185ll, 1ll, 37ll, 145ll, 1ll, 5ll, 8, 2, 1, 2>(c, a, b, ({ty}*)seg_sh);\n\
                 seg_gemm_s<{ty}, 1ll, 10, 128, 32, 0ll, 32ll, 1ll, 0ll, 1ll, 32ll, 32, 4, 2, 1>(c, a, b, ({ty}*)seg_sh);\n}}\n"
            ));
        }
        src.push_str(
            "extern \"C\" __global__ void __launch_bounds__(1024) probe_tc(float* c, const float* a, const float* b) {\n\
             extern __shared__ __align__(16) unsigned char seg_sh[];\n\
             seg_gemm_tc<1ll, 32, 128, 256, 0ll, 256ll, 1ll, 0ll, 1ll, 256ll, 88, 4, 4>(c, a, b, (float*)seg_sh);\n\
             seg_gemm_tc<1ll, 32, 128, 256, 0ll, 1ll, 32ll, 0ll, 128ll, 1ll, 88, 4, 1>(c, a, b, (float*)seg_sh);\n\
             seg_gemm_tc<2ll, 37, 29, 5, 185ll, 1ll, 37ll, 145ll, 1ll, 5ll, 8, 1, 1>(c, a, b, (float*)seg_sh);\n\
             __shared__ long long seg_t[2]; seg_t[0] = clock64();\n\
             printf(\"trace probe %d %lld gemm\\n\", 0, seg_t[0]);\n}\n",
        );
        crate::dev::nvrtc_cubin(&src, crate::dev::nvrtc_opts()).expect("GEMM templates compile");
    }

    /// Values live in the same phase never share bytes; a value whose life starts after another's
    /// ended takes its place; one that does not fit is left in the arena.
    #[test]
    fn local_values_share_bytes_only_across_barriers() {
        // (bytes, first phase, last phase)
        let values = [
            (64, 0, 2),
            (32, 0, 0),
            (48, 1, 3),  // past the first, in the second's bytes (free from phase 1)
            (32, 1, 1),  // past the first and the third
            (64, 3, 4),  // in the first's bytes (free from phase 3)
            (512, 4, 4), // too big
        ];
        let at = place_locals(&values, 200);
        assert_eq!(
            at,
            vec![Some(0), Some(64), Some(64), Some(112), Some(0), None]
        );
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate().skip(i + 1) {
                let (Some(x), Some(y)) = (at[i], at[j]) else {
                    continue;
                };
                let live_together = a.1 <= b.2 && b.1 <= a.2;
                let overlap = x < y + b.0 && y < x + a.0;
                assert!(!(live_together && overlap), "values {i} and {j}");
            }
        }
    }

    /// Every part gets a warp, the shares add up to the block, larger parts get more.
    #[test]
    fn warp_shares_follow_the_elements() {
        for (elems, want) in [
            (
                vec![8192, 8192, 4096, 128, 64, 10],
                vec![12, 11, 6, 1, 1, 1],
            ),
            (vec![100, 1], vec![31, 1]),
            (vec![3, 3, 3], vec![10, 10, 12]),
        ] {
            assert_eq!(warp_shares(&elems, 32), want, "{elems:?}");
        }
    }

    #[test]
    fn memory_overlap() {
        assert!(overlaps(&r(0, 64), &r(32, 96)));
        assert!(!overlaps(&r(0, 64), &r(64, 128)));
        assert!(overlaps(&st("a"), &st("a")));
        assert!(!overlaps(&st("a"), &st("b")));
        assert!(!overlaps(&Mem::ReadOnly, &Mem::ReadOnly));
        assert!(!overlaps(&Mem::Own(1), &r(0, 64)));
    }
}
