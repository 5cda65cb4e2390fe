//! Fewer launches: the step's device operations merged after they are built.
//!
//! - **Multi-tensor launches** (first). Fused groups and copies in a row that touch no common
//!   memory (the optimizer updates of every parameter, even with each one's small step-size group
//!   between them: the row is scheduled in waves of independent parts) become one kernel whose
//!   block ranges select the group, when together they are larger than a segment takes.
//! - **Segments.** Consecutive operations whose tensors are all small (at most
//!   [`segment_limit`] elements) become ONE kernel run by a single block of 1024 threads (`LAMINA_CUDA_SEGMENT_THREADS`): each
//!   operation a block-strided loop (fused groups through `FusedText::body`, the generic kernels
//!   of `kernels.cu` called as their device templates, which loop over the grid, here one
//!   block), with a `__syncthreads()` before an operation that depends on one since the last
//!   barrier. A training step's loss section (softmax cross-entropy, its gradient, the metric
//!   counters: some 25 launches on a few hundred elements) and the small tails of each backward
//!   layer run as one launch each.
//!
//! Both are built from the code the backend generates for each operation; nothing is specific to
//! one op pattern. `LAMINA_CUDA_SEGMENT=<elements>` changes the bound (0 turns both off).

use super::{Arg, Builder, Func, Kernel, Walk, BLOCK, MAX_RANK};
use crate::codegen::c_type;
use lamina_core::{numel, DType, Storage};
use std::fmt::Write;

/// Default largest tensor (elements) an operation of a segment may touch.
const SEGMENT_ELEMS: usize = 32768;
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
}

impl Builder<'_> {
    fn slot_info(&self, slot: usize) -> Option<SlotInfo> {
        let g = &self.plan.graph;
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
                let code = format!(
                    "  for (long long i = {i0}; i < {n}ll; i += {step}) (({ty}*){})[i] = ((const {ty}*){})[i];\n",
                    q(*dst),
                    q(*src)
                );
                Some(Part {
                    code,
                    slots: vec![*src, *dst],
                    reads: vec![*src],
                    writes: vec![*dst],
                    elems: si.elems.max(di.elems),
                    grid: n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
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
                let code = f.body(i0, step, &format!("{n}ll"), &|k| q(slots[k]));
                Some(Part {
                    code,
                    slots,
                    reads,
                    writes,
                    elems,
                    grid: (*n as usize).div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
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
                })
            }
            Kernel::Launch { .. } | Kernel::Gemm(_) | Kernel::Lt(_) => None,
        }
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
        })
    }

    /// Merges runs of `kernels` into segments and multi-tensor launches; returns the new list and
    /// the name and CUDA C of each merged kernel.
    pub(super) fn merge(&self, kernels: Vec<Kernel>) -> (Vec<Kernel>, Vec<(String, String)>) {
        let limit = segment_limit();
        let mut src = Vec::new();
        if limit == 0 {
            return (kernels, src);
        }
        let kernels = self.merge_multi(kernels, limit, &mut src);
        let kernels = self.merge_segments(kernels, limit, &mut src);
        (kernels, src)
    }

    /// The kernel text of merged parts: parameters are the slots, each a typed pointer.
    fn kernel_text(
        &self,
        name: &str,
        bounds: &str,
        parts: &[(Part, String)],
    ) -> (String, Vec<Arg>) {
        let mut slots: Vec<usize> = Vec::new();
        for (p, _) in parts {
            for &s in &p.slots {
                if !slots.contains(&s) {
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
        src: &mut Vec<(String, String)>,
    ) -> Vec<Kernel> {
        let threads = segment_threads();
        let mut out = Vec::with_capacity(kernels.len());
        let mut run: Vec<(Kernel, Part)> = Vec::new();
        let flush = |run: &mut Vec<(Kernel, Part)>,
                     out: &mut Vec<Kernel>,
                     src: &mut Vec<(String, String)>| {
            if run.len() < 2 {
                out.extend(run.drain(..).map(|(k, _)| k));
                return;
            }
            let name = format!("segment_{}", src.len());
            let mems = |s: &[usize]| -> Vec<Mem> {
                s.iter()
                    .map(|&x| self.slot_info(x).map_or(Mem::Own(x), |i| i.mem))
                    .collect()
            };
            let rw: Vec<(Vec<Mem>, Vec<Mem>)> = run
                .iter()
                .map(|(_, p)| (mems(&p.reads), mems(&p.writes)))
                .collect();
            let barrier = barriers_of(&rw);
            let parts: Vec<(Part, String)> = run
                .drain(..)
                .enumerate()
                .map(|(j, (_, p))| {
                    let sep = if barrier.get(j + 1) == Some(&true) {
                        "  __syncthreads();\n"
                    } else {
                        ""
                    };
                    (p, sep.to_string())
                })
                .collect();
            let (text, args) =
                self.kernel_text(&name, &format!("__launch_bounds__({threads})"), &parts);
            src.push((name.clone(), text));
            out.push(Kernel::Launch {
                func: Func::Merged(name),
                f: None,
                grid: 1,
                block: threads,
                args,
            });
        };
        for k in kernels {
            match self.part(&k, "threadIdx.x", "blockDim.x", true) {
                Some(p) if p.elems <= limit => run.push((k, p)),
                _ => {
                    flush(&mut run, &mut out, src);
                    out.push(k);
                }
            }
        }
        flush(&mut run, &mut out, src);
        out
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
            if run.len() < 2 || elems <= limit || blocks >= 1 << 30 {
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
            let (text, args) = self.kernel_text(&name, "", &parts);
            src.push((name.clone(), text));
            out.push(Kernel::Launch {
                func: Func::Merged(name),
                f: None,
                grid: first,
                block: BLOCK,
                args,
            });
        }
    }
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
