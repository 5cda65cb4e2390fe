//! Kernels of the non-elementwise primitives other than MatMul and Conv: Iota, RandomBits,
//! reductions, ArgMax, the copy kernels (Permute / Expand / Slice as strided gathers, Pad as a fill
//! and a strided scatter), Gather and ScatterAdd.

use crate::arena::Slots;
use crate::elem::{with_elem, Dt, Elem};
use crate::layout::Strided;
use std::ops::Range;

/// Below this many elements a kernel runs on the calling thread.
pub(crate) const PAR_MIN: usize = 1 << 20;

/// Extra properties of element types that reductions need.
pub(crate) trait Ordered: Elem {
    /// The identity of max: -inf for floats, the minimum for integers.
    fn lowest() -> Self;
    fn is_nan(self) -> bool;
}

impl Ordered for f32 {
    fn lowest() -> Self {
        f32::NEG_INFINITY
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}
impl Ordered for f64 {
    fn lowest() -> Self {
        f64::NEG_INFINITY
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}
impl Ordered for i32 {
    fn lowest() -> Self {
        i32::MIN
    }
    fn is_nan(self) -> bool {
        false
    }
}
impl Ordered for u8 {
    fn lowest() -> Self {
        0
    }
    fn is_nan(self) -> bool {
        false
    }
}

/// True when `v` replaces the running maximum `best`: NaN wins and stays; otherwise only a strictly
/// greater value (so ties keep the first).
#[inline(always)]
fn beats<T: Ordered>(v: T, best: T) -> bool {
    !best.is_nan() && (v.is_nan() || v > best)
}

// ---------------------------------------------------------------- Iota, RandomBits

/// `out[o, d, i] = d` for an output viewed as `[outer, dim, inner]`.
#[derive(Clone, Debug)]
pub(crate) struct Iota {
    pub(crate) out: usize,
    pub(crate) dt: Dt,
    pub(crate) outer: usize,
    pub(crate) dim: usize,
    pub(crate) inner: usize,
}

impl Iota {
    /// # Safety
    /// `out` must be the slot of a writable value of `outer·dim·inner` elements of `dt`.
    pub(crate) unsafe fn run(&self, slots: &Slots) {
        let n = self.outer * self.dim * self.inner;
        with_elem!(self.dt, T => {
            // SAFETY: guaranteed by the caller.
            let out: &mut [T] = unsafe { slots.get_mut(self.out, n) };
            if self.inner > 0 {
                for (r, row) in out.chunks_mut(self.inner).enumerate() {
                    row.fill(T::from_f64((r % self.dim) as f64));
                }
            }
        })
    }
}

/// Philox random bits with the `(seed, step)` key read from an i32[2] value.
#[derive(Clone, Debug)]
pub(crate) struct RandomBits {
    pub(crate) key: usize,
    pub(crate) out: usize,
    pub(crate) len: usize,
    pub(crate) stream: u32,
}

impl RandomBits {
    /// # Safety
    /// `key` must hold two i32 and `out` be writable for `len` i32.
    pub(crate) unsafe fn run(&self, slots: &Slots) {
        // SAFETY: guaranteed by the caller.
        let (key, out) = unsafe {
            (
                slots.get::<i32>(self.key, 2),
                slots.get_mut::<i32>(self.out, self.len),
            )
        };
        lamina_core::rng::fill_random_bits(key[0], key[1], self.stream, out);
    }
}

// ---------------------------------------------------------------- reductions

/// How a reduction accumulates elements of `T`.
trait Reducer<T: Elem>: Sync {
    /// Accumulator (wider than `T` for sums).
    type A: Copy + Send + Sync;
    fn init() -> Self::A;
    fn add(acc: Self::A, x: T) -> Self::A;
    /// Folds a contiguous run (sums use several accumulators so the loop pipelines).
    fn fold(acc: Self::A, xs: &[T]) -> Self::A {
        xs.iter().fold(acc, |a, &x| Self::add(a, x))
    }
    fn merge(a: Self::A, b: Self::A) -> Self::A;
    fn finish(a: Self::A) -> T;
}

/// Sums: floats accumulate in f64 (then round once), integers in i64 (then wrap like `round_to`).
struct Sum;
/// Maxima with NaN propagation.
struct MaxOf;

macro_rules! sum_reducer {
    ($t:ty, $a:ty) => {
        impl Reducer<$t> for Sum {
            type A = $a;
            fn init() -> $a {
                0 as $a
            }
            #[inline(always)]
            fn add(acc: $a, x: $t) -> $a {
                acc + x as $a
            }
            fn fold(acc: $a, xs: &[$t]) -> $a {
                let mut lanes = [0 as $a; 8];
                let mut chunks = xs.chunks_exact(8);
                for c in &mut chunks {
                    for (l, &x) in lanes.iter_mut().zip(c) {
                        *l += x as $a;
                    }
                }
                let tail: $a = chunks.remainder().iter().map(|&x| x as $a).sum();
                acc + lanes.iter().sum::<$a>() + tail
            }
            fn merge(a: $a, b: $a) -> $a {
                a + b
            }
            fn finish(a: $a) -> $t {
                <$t as Elem>::from_f64(a as f64)
            }
        }
    };
}
sum_reducer!(f32, f64);
sum_reducer!(f64, f64);
sum_reducer!(i32, i64);

impl<T: Ordered> Reducer<T> for MaxOf {
    type A = T;
    fn init() -> T {
        T::lowest()
    }
    #[inline(always)]
    fn add(acc: T, x: T) -> T {
        if beats(x, acc) {
            x
        } else {
            acc
        }
    }
    fn merge(a: T, b: T) -> T {
        Self::add(a, b)
    }
    fn finish(a: T) -> T {
        a
    }
}

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduceKind {
    Sum,
    Max,
}

/// A reduction over any set of axes, on the operand's shape with size-1 axes dropped and adjacent
/// axes of the same kind (reduced or kept) merged.
#[derive(Clone, Debug)]
pub(crate) struct Reduce {
    pub(crate) kind: ReduceKind,
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) out: usize,
    /// `(size, reduced)` per collapsed axis (never empty).
    dims: Vec<(usize, bool)>,
    /// Output stride of each collapsed axis (0 on reduced axes).
    out_strides: Vec<usize>,
    in_len: usize,
    out_len: usize,
}

impl Reduce {
    pub(crate) fn new(
        kind: ReduceKind,
        dt: Dt,
        src: usize,
        out: usize,
        shape: &[usize],
        axes: &[usize],
    ) -> Reduce {
        let mut dims: Vec<(usize, bool)> = Vec::new();
        for (a, &n) in shape.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let red = axes.contains(&a);
            match dims.last_mut() {
                Some((pn, pr)) if *pr == red => *pn *= n,
                _ => dims.push((n, red)),
            }
        }
        if dims.is_empty() {
            dims.push((1, false));
        }
        let mut out_strides = vec![0; dims.len()];
        let mut s = 1;
        for (i, &(n, red)) in dims.iter().enumerate().rev() {
            if !red {
                out_strides[i] = s;
                s *= n;
            }
        }
        let in_len = shape.iter().product();
        Reduce {
            kind,
            dt,
            src,
            out,
            dims,
            out_strides,
            in_len,
            out_len: s,
        }
    }

    /// # Safety
    /// `src` must hold the operand and `out` be writable for the result, of `dt`.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            match (self.kind, self.dt) {
                (ReduceKind::Sum, Dt::F32) => self.go::<f32, Sum>(slots, threads),
                (ReduceKind::Sum, Dt::F64) => self.go::<f64, Sum>(slots, threads),
                (ReduceKind::Sum, Dt::I32) => self.go::<i32, Sum>(slots, threads),
                (ReduceKind::Max, Dt::F32) => self.go::<f32, MaxOf>(slots, threads),
                (ReduceKind::Max, Dt::F64) => self.go::<f64, MaxOf>(slots, threads),
                (ReduceKind::Max, Dt::I32) => self.go::<i32, MaxOf>(slots, threads),
                // the shape rule rejects bool reductions; compile refuses them too
                (_, Dt::Bool) => {}
            }
        }
    }

    unsafe fn go<T: Elem, R: Reducer<T>>(&self, slots: &Slots, threads: usize) {
        // SAFETY: guaranteed by `run`'s caller.
        let (x, out) = unsafe {
            (
                slots.get::<T>(self.src, self.in_len),
                slots.get_mut::<T>(self.out, self.out_len),
            )
        };
        let mut acc = vec![R::init(); self.out_len];
        let (d0, red0) = self.dims[0];
        let per0 = self.in_len.checked_div(d0).unwrap_or(0);
        if threads <= 1 || self.in_len < PAR_MIN || d0 < 2 {
            self.accumulate::<T, R>(x, 0..d0, &mut acc);
        } else if !red0 {
            // disjoint output rows per part
            let rows_per_part = d0.div_ceil(threads * 4);
            let step = self.out_strides[0];
            crate::parallel::for_each_chunk_mut(&mut acc, rows_per_part * step, |p, a| {
                let lo = p * rows_per_part;
                let hi = (lo + rows_per_part).min(d0);
                self.accumulate::<T, R>(&x[lo * per0..hi * per0], 0..hi - lo, a);
            });
        } else {
            // the outer axis is reduced: private accumulators per part, merged afterwards
            let parts = threads.min(d0);
            let partial: Vec<Vec<R::A>> = crate::parallel::map(parts, |p| {
                let (lo, hi) = (p * d0 / parts, (p + 1) * d0 / parts);
                let mut a = vec![R::init(); self.out_len];
                self.accumulate::<T, R>(&x[lo * per0..hi * per0], 0..hi - lo, &mut a);
                a
            });
            for part in partial {
                for (a, b) in acc.iter_mut().zip(part) {
                    *a = R::merge(*a, b);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = R::finish(a);
        }
    }

    /// Accumulates `x` (indices `rows0` of the outer axis, starting at its index 0) into `acc`
    /// (whose element 0 is the output of that first outer index).
    fn accumulate<T: Elem, R: Reducer<T>>(&self, x: &[T], rows0: Range<usize>, acc: &mut [R::A]) {
        let k = self.dims.len();
        let (inner, inner_red) = self.dims[k - 1];
        if x.is_empty() || inner == 0 {
            return;
        }
        if k == 1 {
            // one axis: `x` is a piece of it, `acc` the matching output (or the single total)
            if inner_red {
                acc[0] = R::fold(acc[0], x);
            } else {
                for (a, &v) in acc.iter_mut().zip(x) {
                    *a = R::add(*a, v);
                }
            }
            return;
        }
        let mut sizes = self.dims.iter().map(|d| d.0).collect::<Vec<_>>();
        sizes[0] = rows0.len();
        // walk the rows (all axes but the innermost) with their output offsets
        let walk = Strided::new(&sizes[..k - 1], &self.out_strides[..k - 1], 0);
        let rows = x.len() / inner;
        let mut row = 0;
        walk.for_runs(0..rows, |_, off, run, stride| {
            for j in 0..run {
                let o = off + j * stride;
                let xs = &x[(row + j) * inner..(row + j + 1) * inner];
                if inner_red {
                    acc[o] = R::fold(acc[o], xs);
                } else {
                    for (a, &v) in acc[o..o + inner].iter_mut().zip(xs) {
                        *a = R::add(*a, v);
                    }
                }
            }
            row += run;
        });
    }
}

/// Index of the first maximum along the middle axis of `[outer, dim, inner]`, as i32.
#[derive(Clone, Debug)]
pub(crate) struct ArgMax {
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) out: usize,
    pub(crate) outer: usize,
    pub(crate) dim: usize,
    pub(crate) inner: usize,
}

impl ArgMax {
    /// # Safety
    /// `src` must hold `outer·dim·inner` elements of `dt`, `out` be writable for `outer·inner` i32.
    pub(crate) unsafe fn run(&self, slots: &Slots) {
        with_elem!(self.dt, T => {
            // SAFETY: guaranteed by the caller.
            let (x, out) = unsafe {
                (slots.get::<T>(self.src, self.outer * self.dim * self.inner), slots.get_mut::<i32>(self.out, self.outer * self.inner))
            };
            self.go::<T>(x, out)
        })
    }

    fn go<T: Ordered>(&self, x: &[T], out: &mut [i32]) {
        let (dim, inner) = (self.dim, self.inner);
        if inner == 0 || dim == 0 {
            return;
        }
        let mut best = vec![T::lowest(); inner];
        for (o, orow) in out.chunks_mut(inner).enumerate() {
            best.fill(T::lowest());
            orow.fill(0);
            for d in 0..dim {
                let xs = &x[(o * dim + d) * inner..(o * dim + d + 1) * inner];
                for ((b, i), &v) in best.iter_mut().zip(orow.iter_mut()).zip(xs) {
                    if beats(v, *b) {
                        *b = v;
                        *i = d as i32;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- movement

/// Permute, Expand, Slice (and a Reshape that must copy): `out[i] = src[walk(i)]`.
#[derive(Clone, Debug)]
pub(crate) struct StridedCopy {
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) src_len: usize,
    pub(crate) out: usize,
    pub(crate) out_len: usize,
    pub(crate) walk: Strided,
}

impl StridedCopy {
    /// # Safety
    /// `src` must hold `src_len` elements of `dt` and `out` be writable for `out_len`.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        with_elem!(self.dt, T => {
            // SAFETY: guaranteed by the caller.
            let (x, out) = unsafe { (slots.get::<T>(self.src, self.src_len), slots.get_mut::<T>(self.out, self.out_len)) };
            if threads <= 1 || self.out_len < PAR_MIN {
                self.walk.gather(x, 0, out);
            } else {
                let chunk = self.out_len.div_ceil(threads * 4);
                crate::parallel::for_each_chunk_mut(out, chunk, |c, o| self.walk.gather(x, c * chunk, o));
            }
        })
    }
}

/// Pad: fill with the value, then scatter the operand to `lo + i·(interior+1)`.
#[derive(Clone, Debug)]
pub(crate) struct Pad {
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) src_len: usize,
    pub(crate) out: usize,
    pub(crate) out_len: usize,
    pub(crate) value: f64,
    /// Output positions of the operand's elements.
    pub(crate) walk: Strided,
}

impl Pad {
    /// # Safety
    /// `src` must hold `src_len` elements of `dt` and `out` be writable for `out_len`.
    pub(crate) unsafe fn run(&self, slots: &Slots) {
        with_elem!(self.dt, T => {
            // SAFETY: guaranteed by the caller.
            let (x, out) = unsafe { (slots.get::<T>(self.src, self.src_len), slots.get_mut::<T>(self.out, self.out_len)) };
            out.fill(T::from_f64(self.value));
            self.walk.scatter(x, out);
        })
    }
}

// ---------------------------------------------------------------- indexing

/// `take` along an axis: operand `[pre, dim, post]`, `k` indices, result `[pre, k, post]`.
#[derive(Clone, Debug)]
pub(crate) struct Gather {
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) idx: usize,
    pub(crate) out: usize,
    pub(crate) pre: usize,
    pub(crate) dim: usize,
    pub(crate) post: usize,
    pub(crate) k: usize,
}

impl Gather {
    /// # Safety
    /// The slots must hold the operand, `k` i32 indices and a writable result, of the sizes above.
    pub(crate) unsafe fn run(&self, slots: &Slots, threads: usize) {
        let (pre, dim, post, k) = (self.pre, self.dim, self.post, self.k);
        with_elem!(self.dt, T => {
            // SAFETY: guaranteed by the caller.
            let (x, idx, out) = unsafe {
                (slots.get::<T>(self.src, pre * dim * post), slots.get::<i32>(self.idx, k), slots.get_mut::<T>(self.out, pre * k * post))
            };
            if post == 0 || out.is_empty() {
                return;
            }
            let rows = |first: usize, o: &mut [T]| {
                for (r, row) in o.chunks_mut(post).enumerate() {
                    let (p, j) = ((first + r) / k, (first + r) % k);
                    let sel = idx[j];
                    if sel >= 0 && (sel as usize) < dim {
                        let s = (p * dim + sel as usize) * post;
                        row.copy_from_slice(&x[s..s + post]);
                    } else {
                        row.fill(T::default());
                    }
                }
            };
            if threads <= 1 || out.len() < PAR_MIN {
                rows(0, out);
            } else {
                let per = (pre * k).div_ceil(threads * 4);
                crate::parallel::for_each_chunk_mut(out, per * post, |c, o| rows(c * per, o));
            }
        })
    }
}

/// Transpose of Gather: updates `[pre, k, post]` added into zeros `[pre, dim, post]` at the indices.
#[derive(Clone, Debug)]
pub(crate) struct ScatterAdd {
    pub(crate) dt: Dt,
    pub(crate) src: usize,
    pub(crate) idx: usize,
    pub(crate) out: usize,
    pub(crate) pre: usize,
    pub(crate) dim: usize,
    pub(crate) post: usize,
    pub(crate) k: usize,
}

impl ScatterAdd {
    /// # Safety
    /// The slots must hold the updates, `k` i32 indices and a writable result, of the sizes above.
    pub(crate) unsafe fn run(&self, slots: &Slots) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            match self.dt {
                Dt::F32 => self.go::<f32>(slots),
                Dt::F64 => self.go::<f64>(slots),
                Dt::I32 => self.go::<i32>(slots),
                // the shape rule rejects bool updates; compile refuses them too
                Dt::Bool => {}
            }
        }
    }

    unsafe fn go<T: Elem>(&self, slots: &Slots)
    where
        Sum: Reducer<T>,
    {
        let (pre, dim, post, k) = (self.pre, self.dim, self.post, self.k);
        // SAFETY: guaranteed by `run`'s caller.
        let (u, idx, out) = unsafe {
            (
                slots.get::<T>(self.src, pre * k * post),
                slots.get::<i32>(self.idx, k),
                slots.get_mut::<T>(self.out, pre * dim * post),
            )
        };
        // accumulate wide, round once (as the f64 definition does)
        let mut acc = vec![<Sum as Reducer<T>>::init(); out.len()];
        for p in 0..pre {
            for (j, &sel) in idx.iter().enumerate() {
                if sel < 0 || sel as usize >= dim {
                    continue;
                }
                let d = (p * dim + sel as usize) * post;
                let s = (p * k + j) * post;
                for (a, &v) in acc[d..d + post].iter_mut().zip(&u[s..s + post]) {
                    *a = <Sum as Reducer<T>>::add(*a, v);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = <Sum as Reducer<T>>::finish(a);
        }
    }
}
