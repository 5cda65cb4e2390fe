//! Element types the CPU backend runs, and the conversions that give them `eval_scalar`'s
//! semantics.

use lamina_core::{DType, Error, Result};

/// A dtype this backend can hold: every [`DType`] except the half-precision ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dt {
    F32,
    F64,
    I32,
    /// Stored as one byte, 0 or 1.
    Bool,
}

impl Dt {
    /// The backend dtype of `d`, or an error naming the unsupported one.
    pub(crate) fn of(d: DType) -> Result<Dt> {
        match d {
            DType::F32 => Ok(Dt::F32),
            DType::F64 => Ok(Dt::F64),
            DType::I32 => Ok(Dt::I32),
            DType::Bool => Ok(Dt::Bool),
            DType::F16 | DType::BF16 => Err(Error::Backend {
                backend: "cpu".into(),
                msg: format!("dtype {d} is not supported by the CPU backend (use f32 or f64)"),
            }),
        }
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Dt::F32 | Dt::I32 => 4,
            Dt::F64 => 8,
            Dt::Bool => 1,
        }
    }
}

/// Host element types, one per [`Dt`] (`u8` holds a bool).
pub(crate) trait Elem: Copy + Default + PartialOrd + Send + Sync + 'static {
    /// Rounds an f64 to this type as `lamina_core::ops::elementwise::round_to` does.
    fn from_f64(v: f64) -> Self;
    /// The exact f64 value.
    fn to_f64(self) -> f64;
    /// Converts as the Cast primitive does: like [`Elem::from_f64`], except that float → i32
    /// saturates (Rust's `as`).
    #[inline(always)]
    fn cast_from_f64(v: f64) -> Self {
        Self::from_f64(v)
    }
    /// `if c != 0 { a } else { b }` as a bit blend: written as a branch, LLVM turns a select
    /// of two loads into a load through a selected address, which does not vectorise.
    fn select(c: u8, a: Self, b: Self) -> Self;
}

macro_rules! blend {
    ($t:ty, $bits:ty, $from:expr) => {
        #[inline(always)]
        fn select(c: u8, a: $t, b: $t) -> $t {
            let m = <$bits>::wrapping_sub(0, (c != 0) as $bits);
            #[allow(clippy::redundant_closure_call)]
            $from((a.to_bits() & m) | (b.to_bits() & !m))
        }
    };
}

impl Elem for f32 {
    blend!(f32, u32, f32::from_bits);
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Elem for f64 {
    blend!(f64, u64, f64::from_bits);
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

impl Elem for i32 {
    #[inline(always)]
    fn select(c: u8, a: i32, b: i32) -> i32 {
        let m = 0i32.wrapping_sub((c != 0) as i32);
        (a & m) | (b & !m)
    }
    // Through i64 like `round_to`: integer arithmetic wraps around.
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as i64 as i32
    }
    #[inline(always)]
    fn cast_from_f64(v: f64) -> Self {
        v as i32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Elem for u8 {
    #[inline(always)]
    fn select(c: u8, a: u8, b: u8) -> u8 {
        let m = 0u8.wrapping_sub((c != 0) as u8);
        (a & m) | (b & !m)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        (v != 0.0) as u8
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// Runs `$body` with `$T` bound to the element type of a [`Dt`].
macro_rules! with_elem {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::elem::Dt::F32 => {
                type $T = f32;
                $body
            }
            $crate::elem::Dt::F64 => {
                type $T = f64;
                $body
            }
            $crate::elem::Dt::I32 => {
                type $T = i32;
                $body
            }
            $crate::elem::Dt::Bool => {
                type $T = u8;
                $body
            }
        }
    };
}
pub(crate) use with_elem;

/// The error every compile-time check of this backend reports.
pub(crate) fn backend_err(msg: impl Into<String>) -> Error {
    Error::Backend {
        backend: "cpu".into(),
        msg: msg.into(),
    }
}
