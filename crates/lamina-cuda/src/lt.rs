//! Dense layers as one cuBLASLt matmul with a bias (+ ReLU) epilogue.
//!
//! The pattern, found in the plan (not by model): a 2-D MatMul `mm` whose only reader is a fused
//! group `add(mm, expand(bias[n]))` [+ `max(add, 0)`], the expand absorbed. The group's step then
//! runs `x·W + b` (epilogue BIAS) or `max(x·W + b, 0)` (RELU_BIAS) as one GEMM writing the group's
//! stored result, and the MatMul's step runs nothing: the bias add (or bias + ReLU) pass over the
//! layer's output and the GEMM's own output disappear. When the group also stores the
//! pre-activation `z` for the backward pass, the ReLU form applies only if every other reader of
//! `z` is `0 < z` (the ReLU gradient's mask), which reads `max(z, 0)` the same: those readers read
//! the stored activation instead, so `z` is never written.
//!
//! The GEMM moves from the MatMul's step to the group's, so its operands must still be intact
//! there (`Plan::untouched`). Descriptors and the algorithm (heuristic) are chosen here, at
//! compile time; a run only sets the bias pointer (state buffers are bound per run) and launches,
//! with the device's preallocated workspace, so graph capture works. A shape the heuristic has
//! no algorithm for keeps the plain GEMM and group. `LAMINA_CUDA_LT=0` turns this off (for
//! measuring what it buys). One difference from the fused group: cuBLASLt's ReLU of a NaN need
//! not be NaN (the mask `0 < z` is false either way).

use super::{Builder, Kernel};
use crate::dev::{cuda_err, Dev};
use cudarc::cublaslt::{result as lt, sys as lts};
use lamina_core::{numel, DType, NodeId, Op, Result, Step, Storage};
use std::ffi::c_void;
use std::sync::Arc;

/// A cuBLASLt handle, destroyed with the last GEMM that uses it.
pub(super) struct LtHandle(lts::cublasLtHandle_t);

// SAFETY: the handle and descriptors are only used by one run at a time, with the device's lock
// held (like the cuBLAS handle in `Dev`).
unsafe impl Send for LtHandle {}
unsafe impl Sync for LtHandle {}
unsafe impl Send for LtGemm {}
unsafe impl Sync for LtGemm {}

impl Drop for LtHandle {
    fn drop(&mut self) {
        // SAFETY: created in `plan_epilogues`, used by nobody once the last GEMM is dropped.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

/// One epilogue GEMM, row-major `out[m,n] = act(a[m,k] · b[k,n] + bias[n])` (an operand flagged
/// transposed is stored as its transpose), with its descriptors and chosen algorithm.
pub(super) struct LtGemm {
    handle: Arc<LtHandle>,
    desc: lts::cublasLtMatmulDesc_t,
    /// Layouts of cuBLASLt's A (our `b`), B (our `a`) and D (our `out`, also C).
    layouts: [lts::cublasLtMatrixLayout_t; 3],
    algo: lts::cublasLtMatmulAlgo_t,
    f64: bool,
    relu: bool,
    a: usize,
    b: usize,
    bias: usize,
    out: usize,
    dims: (usize, usize, usize),
}

impl Drop for LtGemm {
    fn drop(&mut self) {
        // SAFETY: created in `LtGemm::new`, used by nobody once this GEMM is dropped.
        unsafe {
            let _ = lt::destroy_matmul_desc(self.desc);
            for l in self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
        }
    }
}

impl std::fmt::Debug for LtGemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

fn lt_err(what: &str) -> impl FnOnce(lt::CublasError) -> lamina_core::Error + '_ {
    move |e| cuda_err(format!("{what}: {e:?}"))
}

impl LtGemm {
    /// Descriptors and the heuristic's best algorithm; `Ok(None)` when it has none. The slots are
    /// set when the step is compiled.
    fn new(
        handle: &Arc<LtHandle>,
        dev: &Dev,
        f64: bool,
        relu: bool,
        (m, n, k): (usize, usize, usize),
        (ta, tb): (bool, bool),
    ) -> Result<Option<LtGemm>> {
        let (dt, compute, scale) = if f64 {
            (
                lts::cudaDataType::CUDA_R_64F,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_64F,
                lts::cudaDataType::CUDA_R_64F,
            )
        } else if dev.tf32 {
            (
                lts::cudaDataType::CUDA_R_32F,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                lts::cudaDataType::CUDA_R_32F,
            )
        } else {
            (
                lts::cudaDataType::CUDA_R_32F,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                lts::cudaDataType::CUDA_R_32F,
            )
        };
        let (m, n, k) = (m as u64, n as u64, k as u64);
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: our b is cuBLASLt's A. A dense row-major
        // [r, c] is a column-major [c, r] with ld c.
        let desc =
            lt::create_matmul_desc(compute, scale).map_err(lt_err("cublasLtMatmulDescCreate"))?;
        let mut g = LtGemm {
            handle: handle.clone(),
            desc,
            layouts: [std::ptr::null_mut(); 3],
            algo: lts::cublasLtMatmulAlgo_t { data: [0; 8] },
            f64,
            relu,
            a: 0,
            b: 0,
            bias: 0,
            out: 0,
            dims: (m as usize, n as usize, k as usize),
        };
        let la = if tb { (k, n) } else { (n, k) };
        let lb = if ta { (m, k) } else { (k, m) };
        for (i, (r, c)) in [la, lb, (n, m)].into_iter().enumerate() {
            g.layouts[i] = lt::create_matrix_layout(dt, r, c, r as i64)
                .map_err(lt_err("cublasLtMatrixLayoutCreate"))?;
        }
        let epilogue = if relu {
            lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS
        } else {
            lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        };
        let set = |attr, v: *const c_void, size| {
            // SAFETY: `desc` is live; `v` points to `size` bytes of the attribute's type.
            unsafe { lt::set_matmul_desc_attribute(g.desc, attr, v, size) }
                .map_err(lt_err("cublasLtMatmulDescSetAttribute"))
        };
        use lts::cublasLtMatmulDescAttributes_t as A;
        let (op_a, op_b) = (tb as i32, ta as i32);
        set(
            A::CUBLASLT_MATMUL_DESC_TRANSA,
            (&op_a as *const i32).cast(),
            4,
        )?;
        set(
            A::CUBLASLT_MATMUL_DESC_TRANSB,
            (&op_b as *const i32).cast(),
            4,
        )?;
        set(
            A::CUBLASLT_MATMUL_DESC_EPILOGUE,
            (&epilogue as *const lts::cublasLtEpilogue_t).cast(),
            std::mem::size_of::<lts::cublasLtEpilogue_t>(),
        )?;
        let pref = lt::create_matmul_pref().map_err(lt_err("cublasLtMatmulPreferenceCreate"))?;
        let (_, ws_bytes) = dev.workspace();
        let ws = ws_bytes as u64;
        // arena values are 64-byte aligned (`plan::ALIGN`), not the 256 the heuristic assumes
        let align = 16u32;
        use lts::cublasLtMatmulPreferenceAttributes_t as P;
        let found = (|| -> std::result::Result<_, lt::CublasError> {
            // SAFETY: `pref` is live; each value has the attribute's type.
            unsafe {
                lt::set_matmul_pref_attribute(
                    pref,
                    P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    (&ws as *const u64).cast(),
                    8,
                )?;
                for attr in [
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                ] {
                    lt::set_matmul_pref_attribute(pref, attr, (&align as *const u32).cast(), 4)?;
                }
                lt::get_matmul_algo_heuristic(
                    handle.0,
                    g.desc,
                    g.layouts[0],
                    g.layouts[1],
                    g.layouts[2],
                    g.layouts[2],
                    pref,
                )
            }
        })();
        // SAFETY: created above, not used after this.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        match found {
            Ok(h) if h.workspaceSize <= ws_bytes => {
                g.algo = h.algo;
                Ok(Some(g))
            }
            _ => Ok(None),
        }
    }

    /// The name in profiles.
    /// Every slot the GEMM reads or writes.
    pub(super) fn slots(&self) -> [usize; 4] {
        [self.a, self.b, self.bias, self.out]
    }

    pub(super) fn name(&self) -> String {
        let (m, n, k) = self.dims;
        let what = if self.relu { "relu_bias" } else { "bias" };
        format!("lt_{what} {m}x{n}x{k}")
    }

    /// Enqueues the GEMM on the device's stream with the slots' current addresses.
    pub(super) fn run(&self, dev: &Dev, slots: &[u64]) -> Result<()> {
        let bias = slots[self.bias];
        let (pa, pb, pd) = (slots[self.b], slots[self.a], slots[self.out]);
        let (ws, ws_bytes) = dev.workspace();
        let (one32, zero32, one64, zero64) = (1.0f32, 0.0f32, 1.0f64, 0.0f64);
        let (alpha, beta): (*const c_void, *const c_void) = if self.f64 {
            (
                (&one64 as *const f64).cast(),
                (&zero64 as *const f64).cast(),
            )
        } else {
            (
                (&one32 as *const f32).cast(),
                (&zero32 as *const f32).cast(),
            )
        };
        // SAFETY: descriptors and handle are live; the slots hold the operands of the sizes the
        // layouts describe, the workspace is the device's own, the stream is the executable's
        // (used by one run at a time).
        unsafe {
            lt::set_matmul_desc_attribute(
                self.desc,
                lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                (&bias as *const u64).cast(),
                8,
            )
            .map_err(lt_err("cublasLtMatmulDescSetAttribute"))?;
            lt::matmul(
                self.handle.0,
                self.desc,
                alpha,
                beta,
                pa as *const c_void,
                self.layouts[0],
                pb as *const c_void,
                self.layouts[1],
                pd as *const c_void,
                self.layouts[2],
                pd as *mut c_void,
                self.layouts[2],
                &self.algo,
                ws as *mut c_void,
                ws_bytes,
                dev.stream.cu_stream() as _,
            )
            .map_err(lt_err("cublasLtMatmul"))
        }
    }
}

/// What replaces a MatMul and its bias group: skip the MatMul's step, run the GEMM at the group's.
pub(super) struct Epilogue {
    matmul_step: usize,
    /// Taken when the group's step is compiled.
    gemm: Option<LtGemm>,
    /// The nodes read (`a`, `b`, `bias`) and written: their slots are resolved at the group's
    /// step, where `read` knows which state buffers were already assigned (snapshots).
    nodes: [NodeId; 4],
}

impl Builder<'_> {
    /// A node that is the constant 0 (a splat, or an expand of one).
    fn is_zero(&self, x: NodeId) -> bool {
        let x = match self.op(x) {
            Op::Expand { .. } => self.plan.graph.nodes[x].inputs[0],
            _ => x,
        };
        self.splat(x) == Some(0.0)
    }

    /// True when `r`'s value, written at step `tg`, can be read by the elementwise group of step
    /// `tu`: no step in between overwrites it, and step `tu` itself writes over it only in place
    /// (an output with exactly its range and element size: each element is loaded before the
    /// same thread stores it). The planner puts the ReLU gradient's result where the activation
    /// was, once the activation's last planned reader (the weight gradient) has run.
    fn intact_for(&self, r: NodeId, tg: usize, tu: usize) -> bool {
        let plan = self.plan;
        if !plan.untouched(r, tg, tu - 1) {
            return false;
        }
        let Step::Fused { outputs, .. } = &plan.steps[tu] else {
            return false;
        };
        let Storage::Arena { offset, bytes } = plan.storage[r] else {
            return plan.untouched(r, tu - 1, tu);
        };
        let size = self.dtype(r).size_bytes();
        outputs.iter().all(|&v| match plan.storage[v] {
            Storage::Arena {
                offset: o,
                bytes: b,
            } => {
                o + b <= offset
                    || offset + bytes <= o
                    || (o == offset && b == bytes && self.dtype(v).size_bytes() == size)
            }
            _ => true,
        })
    }

    /// Finds the dense layers of the plan that run as one epilogue GEMM (see the module docs) and
    /// records them in `self.epilogues` (by group step) and `self.alias`.
    pub(super) fn plan_epilogues(&mut self) -> Result<()> {
        if std::env::var("LAMINA_CUDA_LT").as_deref() == Ok("0") {
            return Ok(());
        }
        let plan = self.plan;
        let g = &plan.graph;
        let users = g.users();
        let step_of = plan.step_of_nodes();
        let absorbed = |m: NodeId| {
            matches!(g.nodes[m].op, Op::Expand { .. }) && plan.storage[m] == Storage::Inline
        };
        for (tg, step) in plan.steps.iter().enumerate() {
            let Step::Fused { nodes, outputs } = step else {
                continue;
            };
            let members: Vec<NodeId> = nodes.iter().copied().filter(|&m| !absorbed(m)).collect();
            let (add, relu) = match members[..] {
                [a] => (a, None),
                [a, r] => (a, Some(r)),
                _ => continue,
            };
            let an = &g.nodes[add];
            if !matches!(an.op, Op::Add) || an.ty.shape.len() != 2 {
                continue;
            }
            let dt = an.ty.dtype;
            if !matches!(dt, DType::F32 | DType::F64) {
                continue;
            }
            let (m, n) = (an.ty.shape[0], an.ty.shape[1]);
            let is_mm = |x: NodeId| matches!(g.nodes[x].op, Op::MatMul);
            let (mm, e) = match (an.inputs[0], an.inputs[1]) {
                (x, y) if is_mm(x) && absorbed(y) && nodes.contains(&y) => (x, y),
                (y, x) if is_mm(x) && absorbed(y) && nodes.contains(&y) => (x, y),
                _ => continue,
            };
            let bias = g.nodes[e].inputs[0];
            let bs = &g.nodes[bias].ty.shape;
            if numel(bs) != n || bs.last() != Some(&n) || g.nodes[bias].ty.dtype != dt {
                continue;
            }
            let k = g.nodes[g.nodes[mm].inputs[0]].ty.shape[1];
            // a layer this small runs inside a segment, GEMM and bias group together
            if super::segment::segment_takes_gemm(1, m, n, k) {
                continue;
            }
            let Some(tm) = step_of[mm] else { continue };
            if users[mm] != [add]
                || g.outputs.contains(&mm)
                || plan.steps[tm] != Step::Node(mm)
                || k == 0
                || m == 0
                || n == 0
            {
                continue;
            }
            // the result the GEMM writes, and whether the pre-activation's readers move to it
            let (out, alias) = match relu {
                None if outputs[..] == [add] => (add, false),
                None => continue,
                Some(r) => {
                    let rn = &g.nodes[r];
                    let relu_of_add = matches!(rn.op, Op::Max)
                        && ((rn.inputs[0] == add && self.is_zero(rn.inputs[1]))
                            || (rn.inputs[1] == add && self.is_zero(rn.inputs[0])));
                    if !relu_of_add || !outputs.contains(&r) {
                        continue;
                    }
                    if outputs[..] == [r] {
                        (r, false)
                    } else if outputs.len() == 2 && !g.outputs.contains(&add) {
                        // every other reader of z is `0 < z`, reading h = max(z, 0) intact
                        let ok = users[add].iter().all(|&u| {
                            u == r
                                || (matches!(g.nodes[u].op, Op::CmpLt)
                                    && g.nodes[u].inputs[1] == add
                                    && self.is_zero(g.nodes[u].inputs[0])
                                    && matches!(step_of[u], Some(tu) if tu > tg && self.intact_for(r, tg, tu)))
                        });
                        if !ok {
                            continue;
                        }
                        (r, true)
                    } else {
                        continue;
                    }
                }
            };
            // the operands, read at the group's step instead of the MatMul's
            let operand = |x: NodeId| {
                if self.through.contains(&x) {
                    (g.nodes[x].inputs[0], true)
                } else {
                    (x, false)
                }
            };
            let ((qa, ta), (qb, tb)) = (
                operand(g.nodes[mm].inputs[0]),
                operand(g.nodes[mm].inputs[1]),
            );
            if ![qa, qb].iter().all(|&q| plan.untouched(q, tm, tg)) {
                continue;
            }
            if self.lt.is_none() {
                let h = lt::create_handle().map_err(lt_err("creating the cuBLASLt handle"))?;
                self.lt = Some(Arc::new(LtHandle(h)));
            }
            let handle = self.lt.clone().expect("created above");
            let Some(gemm) = LtGemm::new(
                &handle,
                &self.dev,
                dt == DType::F64,
                relu.is_some(),
                (m, n, k),
                (ta, tb),
            )?
            else {
                continue;
            };
            if alias {
                self.alias.insert(add, out);
            }
            self.epilogues.insert(
                tg,
                Epilogue {
                    matmul_step: tm,
                    gemm: Some(gemm),
                    nodes: [qa, qb, bias, out],
                },
            );
            self.skip_steps.insert(tm);
        }
        if crate::dev::profiling() && !self.epilogues.is_empty() {
            let names: Vec<String> = self
                .epilogues
                .values()
                .filter_map(|e| e.gemm.as_ref().map(LtGemm::name))
                .collect();
            eprintln!("lamina-cuda: cuBLASLt epilogue GEMMs: {}", names.join(", "));
        }
        Ok(())
    }

    /// The launches of step `t` when an epilogue GEMM replaces it (`None`: compile it as usual).
    pub(super) fn epilogue_step(&mut self, t: usize) -> Result<Option<Vec<Kernel>>> {
        if self.skip_steps.contains(&t) {
            return Ok(Some(vec![]));
        }
        let Some(e) = self.epilogues.get_mut(&t) else {
            return Ok(None);
        };
        debug_assert!(e.matmul_step < t);
        let [qa, qb, bias, out] = e.nodes;
        let mut gemm = e
            .gemm
            .take()
            .ok_or_else(|| cuda_err(format!("step {t} compiled twice")))?;
        gemm.a = self.read(qa)?;
        gemm.b = self.read(qb)?;
        gemm.bias = self.read(bias)?;
        gemm.out = self.write(out)?;
        Ok(Some(vec![Kernel::Lt(Arc::new(gemm))]))
    }
}
