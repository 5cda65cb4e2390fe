//! Elementwise primitives over slices, with the scalar semantics of
//! `lamina_core::ops::elementwise::eval_scalar`: every loop is a plain map the compiler vectorises.

use crate::elem::{backend_err, Dt, Elem};
use crate::math::{self, MulAdd, NoFma, WithFma};
use lamina_core::{DType, Op, Result};

/// Float dtypes (the unary math ops take only these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fl {
    F32,
    F64,
}

/// Numeric dtypes (arithmetic takes only these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Num {
    F32,
    F64,
    I32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unary {
    Neg,
    Recip,
    Sqrt,
    Exp,
    Log,
    Tanh,
    Erf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compare {
    Lt,
    Eq,
}

/// One elementwise primitive with its operand dtypes resolved, so evaluation never meets an
/// impossible combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ew {
    /// Float math on f32 or f64.
    Unary(Unary, Fl),
    /// Integer negation (wrapping, like `round_to` of the f64 result).
    NegI32,
    /// Arithmetic with result of the operands' dtype.
    Binary(Binary, Num),
    /// Comparison producing bool.
    Compare(Compare, Dt),
    /// `where(cond, a, b)` with `a`, `b` of the given dtype.
    Where(Dt),
    /// Conversion from the first dtype to the second.
    Cast(Dt, Dt),
}

impl Ew {
    /// The kernel for elementwise `op` whose first value operand has dtype `arg` (the condition of a
    /// `where` aside) and whose result has dtype `out`.
    pub(crate) fn new(op: &Op, arg: DType, out: DType) -> Result<Ew> {
        let a = Dt::of(arg)?;
        let fl = || match a {
            Dt::F32 => Ok(Fl::F32),
            Dt::F64 => Ok(Fl::F64),
            _ => Err(backend_err(format!(
                "{} of {arg} is not a float operation",
                op.name()
            ))),
        };
        let num = || match a {
            Dt::F32 => Ok(Num::F32),
            Dt::F64 => Ok(Num::F64),
            Dt::I32 => Ok(Num::I32),
            Dt::Bool => Err(backend_err(format!(
                "{} of bool operands is not defined",
                op.name()
            ))),
        };
        let unary = |u| fl().map(|f| Ew::Unary(u, f));
        let binary = |b| num().map(|n| Ew::Binary(b, n));
        match op {
            Op::Neg if a == Dt::I32 => Ok(Ew::NegI32),
            Op::Neg => unary(Unary::Neg),
            Op::Recip => unary(Unary::Recip),
            Op::Sqrt => unary(Unary::Sqrt),
            Op::Exp => unary(Unary::Exp),
            Op::Log => unary(Unary::Log),
            Op::Tanh => unary(Unary::Tanh),
            Op::Erf => unary(Unary::Erf),
            Op::Add => binary(Binary::Add),
            Op::Sub => binary(Binary::Sub),
            Op::Mul => binary(Binary::Mul),
            Op::Div => binary(Binary::Div),
            Op::Max => binary(Binary::Max),
            Op::CmpLt => num().map(|_| Ew::Compare(Compare::Lt, a)),
            Op::CmpEq => Ok(Ew::Compare(Compare::Eq, a)),
            Op::Where => Ok(Ew::Where(a)),
            Op::Cast { .. } => Ok(Ew::Cast(a, Dt::of(out)?)),
            Op::Input { .. }
            | Op::State { .. }
            | Op::Const { .. }
            | Op::Iota { .. }
            | Op::RandomBits { .. }
            | Op::ReduceSum { .. }
            | Op::ReduceMax { .. }
            | Op::ArgMax { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Expand { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::MatMul
            | Op::Conv(_)
            | Op::Gather { .. }
            | Op::ScatterAdd { .. }
            | Op::Assign { .. } => Err(backend_err(format!("{} is not elementwise", op.name()))),
        }
    }

    /// Number of operands.
    pub(crate) fn arity(self) -> usize {
        match self {
            Ew::Unary(..) | Ew::NegI32 | Ew::Cast(..) => 1,
            Ew::Binary(..) | Ew::Compare(..) => 2,
            Ew::Where(_) => 3,
        }
    }

    /// Evaluates `n` elements: operand `i` starts at `args[i]`, the result at `out`. Bit `i` of
    /// `uniform` says that every element of operand `i` is equal (a broadcast scalar), so binary
    /// ops may keep it in a register.
    ///
    /// # Safety
    /// Each `args[i]` must point to `n` elements of the operand's dtype and `out` to `n` writable
    /// elements of the result's dtype, not overlapping any operand (a binary op may write exactly
    /// over one of its operands: an in-place update).
    pub(crate) unsafe fn eval(self, args: [*const u8; 3], uniform: u8, out: *mut u8, n: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has these features (checked above); the rest is the caller's
                // contract.
                return unsafe { self.eval_avx512(args, uniform, out, n) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA (checked above); the rest is the caller's contract.
                return unsafe { self.eval_avx2(args, uniform, out, n) };
            }
        }
        // SAFETY: guaranteed by the caller.
        unsafe { self.eval_inline::<NoFma>(args, uniform, out, n) }
    }

    /// [`Ew::eval`] compiled for AVX2 + FMA: the same loops, eight f32 lanes wide.
    ///
    /// # Safety
    /// As [`Ew::eval`], on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn eval_avx2(self, args: [*const u8; 3], uniform: u8, out: *mut u8, n: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.eval_inline::<WithFma>(args, uniform, out, n) }
    }

    /// [`Ew::eval`] compiled for AVX-512: the same loops, sixteen f32 lanes wide (each lane
    /// computes exactly what the AVX2 variant computes).
    ///
    /// # Safety
    /// As [`Ew::eval`], on a CPU with AVX-512 F/BW/VL and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn eval_avx512(self, args: [*const u8; 3], uniform: u8, out: *mut u8, n: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.eval_inline::<WithFma>(args, uniform, out, n) }
    }

    /// The body of [`Ew::eval`], inlined into each instruction-set variant.
    ///
    /// # Safety
    /// As [`Ew::eval`].
    #[inline(always)]
    unsafe fn eval_inline<M: MulAdd>(
        self,
        args: [*const u8; 3],
        uniform: u8,
        out: *mut u8,
        n: usize,
    ) {
        // SAFETY: guaranteed by the caller.
        #[inline(always)]
        unsafe fn s<'a, T>(p: *const u8, n: usize) -> &'a [T] {
            unsafe { std::slice::from_raw_parts(p as *const T, n) }
        }
        // SAFETY: guaranteed by the caller.
        #[inline(always)]
        unsafe fn m<'a, T>(p: *mut u8, n: usize) -> &'a mut [T] {
            unsafe { std::slice::from_raw_parts_mut(p as *mut T, n) }
        }
        // SAFETY: `eval`'s contract gives valid, non-overlapping operand and result ranges.
        unsafe {
            match self {
                Ew::Unary(u, Fl::F32) => unary_f32::<M>(u, s(args[0], n), m(out, n)),
                Ew::Unary(u, Fl::F64) => unary_f64(u, s(args[0], n), m(out, n)),
                Ew::NegI32 => map1(s::<i32>(args[0], n), m(out, n), |x: i32| x.wrapping_neg()),
                Ew::Binary(b, Num::F32) => binary_any::<f32>(b, args, uniform, out as *mut f32, n),
                Ew::Binary(b, Num::F64) => binary_any::<f64>(b, args, uniform, out as *mut f64, n),
                Ew::Binary(b, Num::I32) => binary_any::<i32>(b, args, uniform, out as *mut i32, n),
                Ew::Compare(c, dt) => {
                    crate::elem::with_elem!(dt, T => compare_any::<T>(c, args, uniform, m(out, n)))
                }
                Ew::Where(dt) => {
                    crate::elem::with_elem!(dt, T => select::<T>(s(args[0], n), s(args[1], n), s(args[2], n), m(out, n)))
                }
                Ew::Cast(from, to) => cast(from, to, args[0], out, n),
            }
        }
    }
}

#[inline(always)]
fn map1<A: Copy, B>(a: &[A], out: &mut [B], f: impl Fn(A) -> B) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[inline(always)]
fn map2<A: Copy, B: Copy, C>(a: &[A], b: &[B], out: &mut [C], f: impl Fn(A, B) -> C) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[inline(always)]
fn unary_f32<M: MulAdd>(u: Unary, a: &[f32], out: &mut [f32]) {
    match u {
        Unary::Neg => map1(a, out, |x| -x),
        Unary::Recip => map1(a, out, |x| 1.0 / x),
        Unary::Sqrt => map1(a, out, f32::sqrt),
        Unary::Exp => map1(a, out, math::exp_f32::<M>),
        Unary::Log => map1(a, out, math::ln_f32::<M>),
        Unary::Tanh => map1(a, out, math::tanh_f32::<M>),
        // rare (GELU); the f64 definition rounded once is exact
        Unary::Erf => map1(a, out, |x| libm::erf(x as f64) as f32),
    }
}

#[inline(always)]
fn unary_f64(u: Unary, a: &[f64], out: &mut [f64]) {
    match u {
        Unary::Neg => map1(a, out, |x| -x),
        Unary::Recip => map1(a, out, |x| 1.0 / x),
        Unary::Sqrt => map1(a, out, f64::sqrt),
        Unary::Exp => map1(a, out, f64::exp),
        Unary::Log => map1(a, out, f64::ln),
        Unary::Tanh => map1(a, out, f64::tanh),
        Unary::Erf => map1(a, out, libm::erf),
    }
}

/// Arithmetic with `eval_scalar`'s semantics for each numeric type.
pub(crate) trait Arith: Elem {
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn div(a: Self, b: Self) -> Self;
    /// Maximum that propagates NaN and returns the first operand on ties.
    fn max(a: Self, b: Self) -> Self;
}

macro_rules! float_arith {
    ($t:ty) => {
        // f32 results of +, −, ×, ÷ equal the f64 results rounded once (53 ≥ 2·24 + 2 bits).
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn sub(a: Self, b: Self) -> Self {
                a - b
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a * b
            }
            #[inline(always)]
            fn div(a: Self, b: Self) -> Self {
                a / b
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                // `b != b`: a NaN second operand wins; a NaN first operand fails `a < b` and stays.
                #[allow(clippy::eq_op)]
                if a < b || b != b {
                    b
                } else {
                    a
                }
            }
        }
    };
}
float_arith!(f32);
float_arith!(f64);

impl Arith for i32 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a.wrapping_add(b)
    }
    #[inline(always)]
    fn sub(a: Self, b: Self) -> Self {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    fn mul(a: Self, b: Self) -> Self {
        // The definition multiplies in f64: products beyond 2⁵³ round before wrapping.
        ((a as f64) * (b as f64)) as i64 as i32
    }
    #[inline(always)]
    fn div(a: Self, b: Self) -> Self {
        // Truncating division; x/0 = 0; MIN/-1 wraps to MIN as the f64 route does.
        if b == 0 {
            0
        } else {
            a.wrapping_div(b)
        }
    }
    #[inline(always)]
    fn max(a: Self, b: Self) -> Self {
        if a < b {
            b
        } else {
            a
        }
    }
}

#[inline(always)]
fn binary<T: Arith>(op: Binary, a: &[T], b: &[T], out: &mut [T]) {
    match op {
        Binary::Add => map2(a, b, out, T::add),
        Binary::Sub => map2(a, b, out, T::sub),
        Binary::Mul => map2(a, b, out, T::mul),
        Binary::Div => map2(a, b, out, T::div),
        Binary::Max => map2(a, b, out, T::max),
    }
}

/// A binary op whose operands may be broadcast scalars (see [`Ew::eval`]).
///
/// # Safety
/// Each operand pointer must address `out.len()` elements of `T`.
#[inline(always)]
unsafe fn binary_any<T: Arith>(
    op: Binary,
    args: [*const u8; 3],
    uniform: u8,
    out: *mut T,
    n: usize,
) {
    // SAFETY: guaranteed by the caller. A result written in place over one of its operands (an
    // optimizer update into its state buffer) is handled without an aliasing slice: the loop
    // reads and writes `out` only, which also keeps it vectorised.
    unsafe {
        let (a, b) = (args[0] as *const T, args[1] as *const T);
        let (ua, ub) = (uniform & 1 != 0, uniform & 2 != 0);
        let o = std::slice::from_raw_parts_mut(out, n);
        if std::ptr::eq(a, out) && !ua {
            return match ub {
                true => binary_vs_in_place(op, o, *b),
                false if b == a => map_in_place(o, |x| binary_scalar(op, x, x)),
                false => binary_in_place(op, o, std::slice::from_raw_parts(b, n), false),
            };
        }
        if std::ptr::eq(b, out) && !ub {
            return match ua {
                true => map_in_place(o, |y| binary_scalar(op, *a, y)),
                false => binary_in_place(op, o, std::slice::from_raw_parts(a, n), true),
            };
        }
        match (ua, ub) {
            (false, true) => binary_vs(op, std::slice::from_raw_parts(a, n), *b, o),
            (true, false) => binary_sv(op, *a, std::slice::from_raw_parts(b, n), o),
            _ => binary(
                op,
                std::slice::from_raw_parts(a, n),
                std::slice::from_raw_parts(b, n),
                o,
            ),
        }
    }
}

#[inline(always)]
fn binary_scalar<T: Arith>(op: Binary, x: T, y: T) -> T {
    match op {
        Binary::Add => T::add(x, y),
        Binary::Sub => T::sub(x, y),
        Binary::Mul => T::mul(x, y),
        Binary::Div => T::div(x, y),
        Binary::Max => T::max(x, y),
    }
}

#[inline(always)]
fn map_in_place<T: Copy>(o: &mut [T], f: impl Fn(T) -> T) {
    for v in o.iter_mut() {
        *v = f(*v);
    }
}

/// `o = o ∘ other`, or `o = other ∘ o` when `swapped`.
#[inline(always)]
fn binary_in_place<T: Arith>(op: Binary, o: &mut [T], other: &[T], swapped: bool) {
    macro_rules! go {
        ($f:expr) => {
            if swapped {
                for (v, &x) in o.iter_mut().zip(other) {
                    *v = $f(x, *v);
                }
            } else {
                for (v, &y) in o.iter_mut().zip(other) {
                    *v = $f(*v, y);
                }
            }
        };
    }
    match op {
        Binary::Add => go!(T::add),
        Binary::Sub => go!(T::sub),
        Binary::Mul => go!(T::mul),
        Binary::Div => go!(T::div),
        Binary::Max => go!(T::max),
    }
}

#[inline(always)]
fn binary_vs_in_place<T: Arith>(op: Binary, o: &mut [T], y: T) {
    match op {
        Binary::Add => map_in_place(o, |x| T::add(x, y)),
        Binary::Sub => map_in_place(o, |x| T::sub(x, y)),
        Binary::Mul => map_in_place(o, |x| T::mul(x, y)),
        Binary::Div => map_in_place(o, |x| T::div(x, y)),
        Binary::Max => map_in_place(o, |x| T::max(x, y)),
    }
}

#[inline(always)]
fn binary_vs<T: Arith>(op: Binary, a: &[T], y: T, out: &mut [T]) {
    match op {
        Binary::Add => map1(a, out, |x| T::add(x, y)),
        Binary::Sub => map1(a, out, |x| T::sub(x, y)),
        Binary::Mul => map1(a, out, |x| T::mul(x, y)),
        Binary::Div => map1(a, out, |x| T::div(x, y)),
        Binary::Max => map1(a, out, |x| T::max(x, y)),
    }
}

#[inline(always)]
fn binary_sv<T: Arith>(op: Binary, x: T, b: &[T], out: &mut [T]) {
    match op {
        Binary::Add => map1(b, out, |y| T::add(x, y)),
        Binary::Sub => map1(b, out, |y| T::sub(x, y)),
        Binary::Mul => map1(b, out, |y| T::mul(x, y)),
        Binary::Div => map1(b, out, |y| T::div(x, y)),
        Binary::Max => map1(b, out, |y| T::max(x, y)),
    }
}

/// A comparison whose operands may be broadcast scalars (see [`Ew::eval`]).
///
/// # Safety
/// Each operand pointer must address `out.len()` elements of `T`.
#[inline(always)]
unsafe fn compare_any<T: Elem>(op: Compare, args: [*const u8; 3], uniform: u8, out: &mut [u8]) {
    let n = out.len();
    // SAFETY: guaranteed by the caller.
    unsafe {
        let (a, b) = (args[0] as *const T, args[1] as *const T);
        match (op, uniform & 1 != 0, uniform & 2 != 0) {
            (Compare::Lt, false, true) => {
                let y = *b;
                map1(std::slice::from_raw_parts(a, n), out, |x| (x < y) as u8)
            }
            (Compare::Lt, true, false) => {
                let x = *a;
                map1(std::slice::from_raw_parts(b, n), out, |y| (x < y) as u8)
            }
            (Compare::Eq, false, true) => {
                let y = *b;
                map1(std::slice::from_raw_parts(a, n), out, |x| (x == y) as u8)
            }
            (Compare::Eq, true, false) => {
                let x = *a;
                map1(std::slice::from_raw_parts(b, n), out, |y| (x == y) as u8)
            }
            _ => compare(
                op,
                std::slice::from_raw_parts(a, n),
                std::slice::from_raw_parts(b, n),
                out,
            ),
        }
    }
}

#[inline(always)]
fn compare<T: Elem>(op: Compare, a: &[T], b: &[T], out: &mut [u8]) {
    match op {
        Compare::Lt => map2(a, b, out, |x, y| (x < y) as u8),
        Compare::Eq => map2(a, b, out, |x, y| (x == y) as u8),
    }
}

#[inline(always)]
fn select<T: Elem>(c: &[u8], a: &[T], b: &[T], out: &mut [T]) {
    for (((o, &c), &x), &y) in out.iter_mut().zip(c).zip(a).zip(b) {
        *o = T::select(c, x, y);
    }
}

/// Converts `n` elements through f64 as `eval_scalar` does (float → i32 saturates).
///
/// # Safety
/// `a` must point to `n` elements of `from`, `out` to `n` writable elements of `to`.
#[inline(always)]
unsafe fn cast(from: Dt, to: Dt, a: *const u8, out: *mut u8, n: usize) {
    crate::elem::with_elem!(from, A => crate::elem::with_elem!(to, B => {
        // SAFETY: guaranteed by the caller.
        let (a, o) = unsafe { (std::slice::from_raw_parts(a as *const A, n), std::slice::from_raw_parts_mut(out as *mut B, n)) };
        map1(a, o, |x: A| B::cast_from_f64(x.to_f64()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::ops::elementwise::eval_scalar;

    fn run(ew: Ew, out_dt: DType, args: &[Vec<f64>], arg_dts: &[DType]) -> Vec<f64> {
        let n = args[0].len();
        let bufs: Vec<lamina_core::HostTensor> = args
            .iter()
            .zip(arg_dts)
            .map(|(v, &d)| lamina_core::HostTensor::from_f64(&[n], d, v).unwrap())
            .collect();
        let mut ptrs = [std::ptr::null::<u8>(); 3];
        for (p, b) in ptrs.iter_mut().zip(&bufs) {
            *p = crate::buffer::host_ptr(b);
        }
        let mut out = crate::buffer::CpuBuffer::zeros(&[n], out_dt).unwrap();
        // SAFETY: every operand holds n elements of its dtype and `out` n of the result's.
        unsafe { ew.eval(ptrs, 0, out.as_mut_ptr(), n) };
        out.to_host().unwrap().to_f64()
    }

    #[test]
    fn integer_and_cast_semantics_match_eval_scalar() {
        let a = vec![
            7.0,
            -7.0,
            5.0,
            i32::MIN as f64,
            0.0,
            3.0,
            65536.0 * 3.0,
            2147483647.0,
        ];
        let b = vec![2.0, 2.0, 0.0, -1.0, 0.0, -4.0, 65536.0 * 5.0, 2147483647.0];
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max] {
            let got = run(
                Ew::new(&op, DType::I32, DType::I32).unwrap(),
                DType::I32,
                &[a.clone(), b.clone()],
                &[DType::I32; 2],
            );
            for i in 0..a.len() {
                assert_eq!(
                    got[i],
                    eval_scalar(&op, &[a[i], b[i]], DType::I32),
                    "{op:?} {} {}",
                    a[i],
                    b[i]
                );
            }
        }
        let x = vec![-2.7, -0.5, 0.0, 0.4, 1.9, 3.5, 3e9, -3e9, f64::NAN, 1e20];
        for to in [DType::I32, DType::Bool, DType::F64] {
            let op = Op::Cast { to };
            let got = run(
                Ew::new(&op, DType::F32, to).unwrap(),
                to,
                std::slice::from_ref(&x),
                &[DType::F32],
            );
            for i in 0..x.len() {
                let want = eval_scalar(&op, &[x[i] as f32 as f64], to);
                assert!(
                    got[i] == want || (got[i].is_nan() && want.is_nan()),
                    "cast {} to {to}: {} vs {want}",
                    x[i],
                    got[i]
                );
            }
        }
        let nan_max = run(
            Ew::new(&Op::Max, DType::F32, DType::F32).unwrap(),
            DType::F32,
            &[vec![f64::NAN, 1.0], vec![1.0, f64::NAN]],
            &[DType::F32; 2],
        );
        assert!(nan_max.iter().all(|v| v.is_nan()));
    }
}
