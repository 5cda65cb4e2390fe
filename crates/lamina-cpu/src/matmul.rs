//! Batched MatMul through the `gemm` crate. Operands are read with arbitrary row, column and batch
//! strides, so a transposed operand (a Permute of the last two axes) or one broadcast over the
//! batch axes (an Expand) can be read in place instead of being copied first.
//!
//! One shape has its own AVX-512 kernel ([`long_k_f32`]): a long reduction (a dense layer fed by a
//! flattened feature map, readme_cnn's 4096 inputs) by a transposed weight, which gemm ran at
//! about a third of the benchmark Xeon's multiply-add peak. (readme_cnn's dense forward product,
//! fastest runs: 0.51-0.55 → 0.47-0.56 ms on the build machine; on the Xeon 0.54 against gemm's
//! 0.52 ms in one round, no gain shown there.)

use crate::arena::{Block, Ptr, Slots};
use gemm::Parallelism;
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
    crate::elem::Elem + std::ops::AddAssign + std::fmt::Debug
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
            // on cache lines, like the convolutions' buffers: the kernel loads it in whole vectors
            let mut at = Block::new(m * k * std::mem::size_of::<T>());
            let dst = Ptr(at.ptr());
            let rs = self.a.rs;
            let slabs = if threads > 1 { threads } else { 1 };
            crate::parallel::for_each(slabs, |t| {
                let (k0, k1) = (k * t / slabs, k * (t + 1) / slabs);
                #[cfg(target_arch = "x86_64")]
                if std::mem::size_of::<T>() == 4 && has_avx512f() && k1 > k0 {
                    // SAFETY: T is f32; as below, the slab's columns k0..k1 of the `m` rows and
                    // its copy rows; 16×16 blocks transposed in registers.
                    return unsafe {
                        let a = pa.at::<f32>(self.a.batch_offsets[0] + k0);
                        let len = (m - 1) * rs as usize + (k1 - k0);
                        crate::implicit::transpose_rows(
                            std::slice::from_raw_parts(a, len),
                            m,
                            k1 - k0,
                            rs as usize,
                            std::slice::from_raw_parts_mut(dst.at::<f32>(k0 * m), (k1 - k0) * m),
                            m,
                            crate::implicit::Store::Plain,
                        )
                    };
                }
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
        #[cfg(target_arch = "x86_64")]
        if let (Some(at), true) = (&a_copy, std::mem::size_of::<T>() == 4 && has_avx512f()) {
            // SAFETY: T is f32 (size 4, a GemmElem); `at` is the left operand column-major, `b`
            // is read down its columns (`rs == 1`) and the result is `m × n`, written by this
            // call only.
            unsafe {
                let at = &at.as_slice::<f32>()[..m * k];
                let b = pb.at::<f32>(self.b.batch_offsets[0]);
                return long_k_f32(
                    (m, n, k),
                    at,
                    (b, self.b.cs as usize),
                    po.at::<f32>(0),
                    threads,
                );
            }
        }
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
                        (
                            copy.as_slice::<T>().as_ptr().add(r.start) as *mut T,
                            (1, m as isize),
                        )
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
            crate::parallel::for_each(batch, |bi| one(bi, Parallelism::None));
        } else if threads > 1 && batch == 1 && (GEMM_PAR_MIN..GEMM_SPLIT_MAX).contains(&work) {
            // a mid-size product: one block of columns (or rows) per thread, cut at multiples of
            // 16, each a single-threaded gemm (no shared packing for threads to wait on)
            let cut = |len: usize, t: usize| (len * t / threads).next_multiple_of(16).min(len);
            crate::parallel::for_each(threads, |t| {
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

/// Whether the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Reduction steps per block of [`long_k_f32`]: a block's left operand (`64 × m`) and weights
/// (`64 ×` a thread's columns) stay in L1 while every tile runs over it.
const LONG_K_BLOCK: usize = 64;

/// `out[i·n + j] = Σ_k at[k·m + i] · b[j·bcs + k]` (`at` the left operand column-major, `b` a
/// transposed weight read down its columns): each thread takes a range of columns (whole
/// tiles) and sums `LONG_K_BLOCK` reduction steps at a time with register tiles of 8 columns ×
/// 32 rows (one broadcast weight per column and two loads per step, 16 multiply-adds) into a
/// transposed result `[column][row]`, transposed into `out` at the end.
///
/// # Safety
/// The CPU has AVX-512F; `b` is readable at `j·bcs + kk` for `j < n`, `kk < k`, and `out` is
/// writable for `m × n` elements that nothing else accesses meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn long_k_f32(
    (m, n, k): (usize, usize, usize),
    at: &[f32],
    (b, bcs): (*const f32, usize),
    out: *mut f32,
    threads: usize,
) {
    assert!(at.len() >= m * k && m > 0 && n > 0);
    let (b, out) = (Ptr(b as *mut u8), Ptr(out as *mut u8));
    let tasks = threads.clamp(1, n.div_ceil(8));
    let cut = |t: usize| (n.div_ceil(8) * t / tasks * 8).min(n);
    let cols = |t: usize| {
        let (j0, j1) = (cut(t), cut(t + 1));
        let mut tr = Block::new((j1 - j0) * m * 4);
        let tr = tr.as_mut_slice::<f32>();
        // SAFETY: the caller's contract; task t writes columns j0..j1 of `out` only.
        unsafe {
            long_k_cols((m, k), at, (b.at::<f32>(0), bcs), j0..j1, tr);
            for i in 0..m {
                for j in j0..j1 {
                    *out.at::<f32>(i * n + j) = *tr.get_unchecked((j - j0) * m + i);
                }
            }
        }
    };
    if tasks > 1 {
        crate::parallel::for_each(tasks, cols);
    } else {
        cols(0);
    }
}

/// Columns `js` of [`long_k_f32`] into `tr` (`[column − js.start][row]`, zeroed).
///
/// # Safety
/// As [`long_k_f32`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn long_k_cols(
    (m, k): (usize, usize),
    at: &[f32],
    (b, bcs): (*const f32, usize),
    js: Range<usize>,
    tr: &mut [f32],
) {
    use crate::implicit::mask as lanes;
    use std::arch::x86_64::*;
    const R: usize = 8;
    assert!(tr.len() >= js.len() * m);
    let (ap, tp) = (at.as_ptr(), tr.as_mut_ptr());
    for k0 in (0..k).step_by(LONG_K_BLOCK) {
        let k1 = (k0 + LONG_K_BLOCK).min(k);
        for j0 in js.clone().step_by(R) {
            let rows = (js.end - j0).min(R);
            // a short tile repeats its last column; its sums are not stored
            // SAFETY: columns below js.end (the caller's contract).
            let w: [*const f32; R] =
                std::array::from_fn(|r| unsafe { b.add((j0 + r.min(rows - 1)) * bcs) });
            for i0 in (0..m).step_by(32) {
                let (m0, m1) = (lanes(m - i0), lanes((m - i0).saturating_sub(16)));
                // SAFETY: rows i0.. of the tile's columns in `tr`, masked to m; reduction steps
                // below k in `at` and `b`.
                unsafe {
                    let t = tp.add((j0 - js.start) * m + i0);
                    let mut acc: [[__m512; 2]; R] = std::array::from_fn(|r| {
                        let t = t.add(r.min(rows - 1) * m);
                        [
                            _mm512_maskz_loadu_ps(m0, t),
                            _mm512_maskz_loadu_ps(m1, t.wrapping_add(16)),
                        ]
                    });
                    for kk in k0..k1 {
                        let a = ap.add(kk * m + i0);
                        let (a0, a1) = (
                            _mm512_maskz_loadu_ps(m0, a),
                            _mm512_maskz_loadu_ps(m1, a.wrapping_add(16)),
                        );
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*w[r].add(kk));
                            acc[0] = _mm512_fmadd_ps(wv, a0, acc[0]);
                            acc[1] = _mm512_fmadd_ps(wv, a1, acc[1]);
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(rows) {
                        let t = t.add(r * m);
                        _mm512_mask_storeu_ps(t, m0, acc[0]);
                        _mm512_mask_storeu_ps(t.wrapping_add(16), m1, acc[1]);
                    }
                }
            }
        }
    }
}
