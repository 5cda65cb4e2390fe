//! Batched MatMul through the `gemm` crate. Operands are read with arbitrary row, column and batch
//! strides, so a transposed operand (a Permute of the last two axes) or one broadcast over the
//! batch axes (an Expand) can be read in place instead of being copied first.

use crate::arena::{Ptr, Slots};
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// Products of at least this many multiply-adds use several threads: split into one block per
/// thread below `GEMM_SPLIT_MAX`, gemm's own threads above.
const GEMM_PAR_MIN: usize = 1 << 21;
const GEMM_SPLIT_MAX: usize = 1 << 27;
/// Products with fewer multiply-adds than this are never computed through a transposed scratch
/// (bn_mlp's 32×64×64 layers were ~15% slower with it, seed_mlp's 32×128×256 2× faster).
const VIA_SCRATCH_MIN: usize = 1 << 19;
/// Reductions at least this long copy a row-major left operand column-major before gemm.
const LONG_K: usize = 2048;

/// Float element types gemm multiplies.
pub(crate) trait GemmElem:
    Copy + Send + Sync + std::ops::AddAssign + PartialOrd + std::fmt::Debug + 'static
{
    const ZERO: Self;
    const ONE: Self;
}
impl GemmElem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmElem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` with element strides `(row, column)` for each matrix.
///
/// # Safety
/// Every element addressed by the strides must be valid; `dst` must not overlap the operands and
/// no other thread may access it.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into<T: GemmElem>(
    mnk: (usize, usize, usize),
    dst: *mut T,
    dst_rs: isize,
    lhs: *const T,
    lhs_strides: (isize, isize),
    rhs: *const T,
    rhs_strides: (isize, isize),
    par: Parallelism,
) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        gemm_acc(
            mnk,
            dst,
            (dst_rs, 1),
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            false,
            par,
        )
    }
}

/// `dst[m×n] = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, with element strides
/// `(row, column)` for each operand and the destination.
///
/// # Safety
/// As [`gemm_into`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_acc<T: GemmElem>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (dst_rs, dst_cs): (isize, isize),
    lhs: *const T,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (isize, isize),
    accumulate: bool,
    par: Parallelism,
) {
    if m == 0 || n == 0 || (k == 0 && accumulate) {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside the destination, guaranteed by the caller.
                unsafe { *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = T::ZERO };
            }
        }
        return;
    }
    // SAFETY: guaranteed by the caller; gemm computes dst = α·dst + 1·lhs·rhs, reading dst only
    // when accumulating (α = 1).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// How a MatMul reads one operand: the value in `slot`, matrix `b` of the batch at
/// `batch_offsets[b]`, element `(i, j)` of a matrix at `i·rs + j·cs`.
#[derive(Clone, Debug)]
pub(crate) struct MatOperand {
    pub(crate) slot: usize,
    pub(crate) batch_offsets: Vec<usize>,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

/// `[..., m, k] × [..., k, n]`.
#[derive(Clone, Debug)]
pub(crate) struct MatMul {
    pub(crate) f64: bool,
    pub(crate) a: MatOperand,
    pub(crate) b: MatOperand,
    pub(crate) out: usize,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

impl MatMul {
    /// # Safety
    /// The operand slots must hold every element their strides address, `out` be writable for
    /// `batch·m·n` elements and overlap neither.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if self.f64 {
                self.go::<f64>(slots, threads)
            } else {
                self.go::<f32>(slots, threads)
            }
        }
    }

    unsafe fn go<T: GemmElem>(&self, slots: &Slots, threads: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let batch = self.a.batch_offsets.len();
        let (pa, pb, po) = (
            slots.ptr(self.a.slot),
            slots.ptr(self.b.slot),
            slots.ptr(self.out),
        );
        // gemm computes in the orientation where the destination is column-major, and packs (a
        // strided, transposing copy) a left operand without unit row stride. Into a row-major
        // result that left operand is `bᵀ`: when `b` is column-major (a transposed weight) and
        // `a` the smaller operand, the block is computed column-major into scratch (so only `a`
        // is packed, `b` is streamed down its columns) and transposed into place.
        // (small products skip it: the scratch and the copy cost more than gemm's packing)
        let via_scratch = self.b.rs == 1 && self.b.cs != 1 && m < n && m * n * k >= VIA_SCRATCH_MIN;
        // gemm's own packing of a left operand read along its rows is slow for long reductions
        // (dense1 of readme_cnn, k = 4096: 2.3x slower; at k = 784 the copy does not pay): copy
        // it column-major first, once for every thread's block of columns (each copying the
        // whole operand for itself cost the benchmark Xeon 0.1-0.2 ms a step)
        let a_copy = (via_scratch && batch == 1 && self.a.cs == 1 && k >= LONG_K).then(|| {
            let mut at = vec![T::ZERO; m * k];
            let dst = Ptr(at.as_mut_ptr() as *mut u8);
            let rs = self.a.rs;
            let slabs = if threads > 1 { threads } else { 1 };
            (0..slabs).into_par_iter().for_each(|t| {
                let (k0, k1) = (k * t / slabs, k * (t + 1) / slabs);
                // SAFETY: `a` holds `m` rows of `k` (row stride `rs`); slab t writes copy rows
                // k0..k1 only. Blocked 16×16 so both sides stay in cache.
                unsafe {
                    let a = pa.at::<T>(self.a.batch_offsets[0]);
                    for i0 in (0..m).step_by(16) {
                        for kb in (k0..k1).step_by(16) {
                            for i in i0..(i0 + 16).min(m) {
                                for kk in kb..(kb + 16).min(k1) {
                                    *dst.at::<T>(kk * m + i) =
                                        *a.offset(i as isize * rs + kk as isize);
                                }
                            }
                        }
                    }
                }
            });
            at
        });
        // rows `r` and columns `c` of product `bi`
        let part = |bi: usize, r: Range<usize>, c: Range<usize>, par: Parallelism| {
            let a = pa.at::<T>(
                (self.a.batch_offsets[bi] as isize + r.start as isize * self.a.rs) as usize,
            );
            let b = pb.at::<T>(
                (self.b.batch_offsets[bi] as isize + c.start as isize * self.b.cs) as usize,
            );
            let dst = po.at::<T>(bi * m * n + r.start * n + c.start);
            let (a_s, b_s) = ((self.a.rs, self.a.cs), (self.b.rs, self.b.cs));
            let (rows, cols) = (r.len(), c.len());
            // SAFETY: matrix `bi` of each operand and of the result is valid (caller's contract),
            // the block addresses rows `r` and columns `c` inside them, and each call writes only
            // its own block of the result (or its own scratch).
            unsafe {
                if via_scratch {
                    let mut t = vec![T::ZERO; rows * cols];
                    // the left operand column-major (see `a_copy`; made here for a batch)
                    let mut at = Vec::new();
                    let (a, a_s) = if let Some(copy) = &a_copy {
                        (copy.as_ptr().add(r.start) as *mut T, (1, m as isize))
                    } else if a_s.0 == 1 || k < LONG_K {
                        (a, a_s)
                    } else {
                        at = vec![T::ZERO; rows * k];
                        for i0 in (0..rows).step_by(16) {
                            for k0 in (0..k).step_by(16) {
                                for i in i0..(i0 + 16).min(rows) {
                                    for kk in k0..(k0 + 16).min(k) {
                                        *at.get_unchecked_mut(kk * rows + i) =
                                            *a.offset(i as isize * a_s.0 + kk as isize * a_s.1);
                                    }
                                }
                            }
                        }
                        (at.as_ptr() as *mut T, (1, rows as isize))
                    };
                    gemm_acc::<T>(
                        (rows, cols, k),
                        t.as_mut_ptr(),
                        (1, rows as isize),
                        a,
                        a_s,
                        b,
                        b_s,
                        false,
                        par,
                    );
                    drop(at);
                    for i in 0..rows {
                        let d = std::slice::from_raw_parts_mut(dst.add(i * n), cols);
                        for (j, v) in d.iter_mut().enumerate() {
                            *v = *t.get_unchecked(j * rows + i);
                        }
                    }
                } else {
                    gemm_into::<T>((rows, cols, k), dst, n as isize, a, a_s, b, b_s, par)
                }
            }
        };
        let one = |bi: usize, par: Parallelism| part(bi, 0..m, 0..n, par);
        let work = m * n * k;
        if threads > 1 && batch >= threads && work < GEMM_PAR_MIN * 4 {
            // many small products: one per task
            (0..batch)
                .into_par_iter()
                .for_each(|bi| one(bi, Parallelism::None));
        } else if threads > 1 && batch == 1 && (GEMM_PAR_MIN..GEMM_SPLIT_MAX).contains(&work) {
            // a mid-size product: one block of columns (or rows) per thread, cut at multiples of
            // 16, each a single-threaded gemm (no shared packing for threads to wait on)
            let cut = |len: usize, t: usize| (len * t / threads).next_multiple_of(16).min(len);
            (0..threads).into_par_iter().for_each(|t| {
                if n >= m {
                    part(0, 0..m, cut(n, t)..cut(n, t + 1), Parallelism::None)
                } else {
                    part(0, cut(m, t)..cut(m, t + 1), 0..n, Parallelism::None)
                }
            });
        } else {
            let par = if threads > 1 && work >= GEMM_PAR_MIN {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            for bi in 0..batch {
                one(bi, par);
            }
        }
    }
}
